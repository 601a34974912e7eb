"""What a node's text carries: sub-results and the final answer, read from plain text.

Pure functions over strings, so they run on the trajectories of any run directory
(the rows hold each node's text, its question and the gold answer). On the synthetic
tasks a question names its sub-results (``tasks.synthetic.subresults``); for other
tasks only the final answer is checked.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from neuromas_dist.tasks.answers import answers_match, extract_answer, normalize_number
from neuromas_dist.tasks.synthetic import stated_values, subresults

ANSWER = "answer"
_MARKED_ANSWER_RE = re.compile(r"(?i:answer\s*is)\s*(-?\d+(?:\.\d+)?)")
_DIGITS_RE = re.compile(r"\d")


def answer_values(text: str) -> list[str]:
    """Every number the text states as "the answer is N", normalised."""
    return [v for v in (normalize_number(m) for m in _MARKED_ANSWER_RE.findall(text)) if v is not None]


def carries(text: str, question: str, gold: str, answer_type: str = "number") -> dict[str, bool]:
    """For each named sub-result of the question and for "answer": does ``text`` state
    it with the correct value? ("x = (4 + 8) mod 10 = 2." carries x when x is 2.) The answer
    is read with the task's own extractor ("(B)", "Answer: b", "Yes."); a code task's gold is
    its tests, which only the sandbox can judge, so its texts report what they state."""
    out = {name: part.value in stated_values(text, name) for name, part in subresults(question).items()}
    if answer_type == "number":
        out[ANSWER] = normalize_number(gold) in answer_values(text) if gold else False
    elif answer_type != "code":
        out[ANSWER] = bool(gold) and answers_match(extract_answer(text, answer_type), gold, answer_type)
    return out


def states(text: str, question: str, answer_type: str = "number") -> dict[str, bool]:
    """Does ``text`` state each sub-result / an answer at all, right or wrong?"""
    out = {name: bool(stated_values(text, name)) for name in subresults(question)}
    out[ANSWER] = (bool(answer_values(text)) if answer_type == "number"
                   else extract_answer(text, answer_type) is not None)
    return out


def pattern(text: str) -> str:
    """A text's shape with every digit as '#': "x = (4 + 8) mod 10 = 2." -> "x = (# + #) mod ## = #."."""
    return _DIGITS_RE.sub("#", " ".join(text.split()))


def top_patterns(texts: Iterable[str], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most frequent shapes and the fraction of texts each covers."""
    counts = Counter(pattern(t) for t in texts)
    total = sum(counts.values())
    return [(p, c / total) for p, c in counts.most_common(k)] if total else []


def summarize_node(rows: Sequence[Mapping[str, Any]], k: int = 5, answer_type: str = "number") -> dict[str, Any]:
    """What one node wrote over ``rows`` (its rows only): mean response tokens, the ``k``
    most frequent shapes and, when the rows hold their question and gold answer, what
    the texts carry / state (see :func:`carry_fractions`)."""
    out: dict[str, Any] = {
        "response_len_mean": sum(len(r["response_ids"]) for r in rows) / max(1, len(rows)),
        "top_patterns": [[p, f] for p, f in top_patterns((r["text"] for r in rows), k)],
    }
    if rows and all("question" in r and "gold_answer" in r for r in rows):
        fractions = carry_fractions(rows, answer_type)
        out["carries"] = {kind: v["carries"] for kind, v in fractions.items() if v["carries"] is not None}
        out["states"] = {kind: v["states"] for kind, v in fractions.items()}
    return out


def carry_fractions(rows: Iterable[Mapping[str, str]],
                    answer_type: str = "number") -> dict[str, dict[str, float | None]]:
    """Per kind ("x", "y", "answer"): fraction of rows whose text carries it correctly and
    fraction that states it at all. Rows need ``text``, ``question``, ``gold_answer``."""
    n, carried, stated = carry_counts(rows, answer_type)
    # a kind only stated (a code task's answer) has carries None: right or wrong is not read here
    return {k: {"carries": carried[k] / n if k in carried else None, "states": stated[k] / n}
            for k in sorted(set(carried) | set(stated))} if n else {}


def carry_counts(rows: Iterable[Mapping[str, str]], answer_type: str = "number") -> tuple[int, Counter, Counter]:
    """(rows, how many carry each kind, how many state it): the sums behind
    :func:`carry_fractions`, which add up across batches. Every kind seen is a key."""
    carried: Counter = Counter()
    stated: Counter = Counter()
    n = 0
    for row in rows:
        n += 1
        # update() with 0 counts still adds the key: a kind nobody carried is a 0, not absent
        carried.update({k: int(v) for k, v in carries(row["text"], row["question"], row["gold_answer"],
                                                      answer_type).items()})
        stated.update({k: int(v) for k, v in states(row["text"], row["question"], answer_type).items()})
    return n, carried, stated
