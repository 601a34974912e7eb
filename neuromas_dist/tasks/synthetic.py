"""Seeded synthetic tasks that need no download: single-digit modular arithmetic.

"op" is one operation on two digits, "(a + b) mod 10" or "(a * b) mod 10": a primitive
skill. "arith" chains two ("(a + b) * c mod 10"). "hier" composes two independent named
sub-results, x = (a + b) mod 10 and y = (c * d) mod 10, into (x + y) mod 10: a graph
whose first layer works out x and y separately has something real to split, and
:func:`subresults` reads x and y back from the question so what each node wrote can be
checked against them.

Train and eval are disjoint by construction: every distinct question is enumerated
once and assigned to a split by a stable hash of its text (sha256, not Python's salted
hash), independent of the seed. The seed only decides which questions of a split are
drawn and in what order, so eval questions never leak into training under any seed.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import re
from collections.abc import Callable
from typing import NamedTuple

from neuromas_dist.tasks.base import ANSWER_FORMATS, Example, Task

SPLITS = ("train", "eval")
EVAL_PERCENT = 25  # of the distinct questions: arith has 1,000, so the default 200 eval are distinct
SYNTHETIC_ANSWER_FORMAT = ANSWER_FORMATS["number"]


def _arith(a: int, b: int, c: int) -> tuple[str, int]:
    # Exact wording matters: the tiny model is pre-trained on it.
    return f"What is ({a} + {b}) * {c} mod 10?", ((a + b) * c) % 10


def _hier(a: int, b: int, c: int, d: int) -> tuple[str, int]:
    x, y = (a + b) % 10, (c * d) % 10
    return f"Let x = ({a} + {b}) mod 10 and y = ({c} * {d}) mod 10. What is (x + y) mod 10?", (x + y) % 10


def _op(a: int, b: int, k: int) -> tuple[str, int]:
    # One operation: the primitive skill the hier task composes three of.
    op = "+*"[k]
    return f"What is ({a} {op} {b}) mod 10?", (a + b if op == "+" else a * b) % 10


# kind -> (digit range of each operand, question builder)
_D = range(10)
_GENERATORS: dict[str, tuple[tuple[range, ...], Callable[..., tuple[str, int]]]] = {
    "arith": ((_D, _D, _D), _arith),
    "hier": ((_D, _D, _D, _D), _hier),
    "op": ((_D, _D, range(2)), _op),
}
KINDS = tuple(_GENERATORS)

# The named sub-results a question defines, read back from its text (so any run
# directory's trajectories can be analysed without the generator's state).
_HIER_RE = re.compile(r"Let x = (\((\d) \+ (\d)\) mod 10) and y = (\((\d) \* (\d)\) mod 10)\.")


class SubResult(NamedTuple):
    expression: str  # as the question defines it, e.g. "(4 + 8) mod 10"
    value: str  # its value, e.g. "2"


def subresults(question: str) -> dict[str, SubResult]:
    """Named intermediate results of a synthetic question: x and y for hier, {} for a
    question that names none (arith, op, anything else)."""
    match = _HIER_RE.search(question)
    if match is None:
        return {}
    x_expr, a, b, y_expr, c, d = match.groups()
    return {"x": SubResult(x_expr, str((int(a) + int(b)) % 10)),
            "y": SubResult(y_expr, str((int(c) * int(d)) % 10))}


def subresult_sentence(name: str, part: SubResult) -> str:
    """How a node states an intermediate result: "x = (4 + 8) mod 10 = 2.". The
    definition is restated so the operands sit next to the value, the way a person
    writes out a step."""
    return f"{name} = {part.expression} = {part.value}."


def final_step(values: dict[str, str]) -> tuple[str, str | None]:
    """The hier question's last step written out with given sub-result values, and its
    result: {"x": "2", "y": "6"} -> ("(x + y) mod 10 = (2 + 6) mod 10 = 8.", "8"). A value
    that is not a digit (unknown, "?") leaves the step open: ("(x + y) mod 10 = (2 + ?) mod 10.", None)."""
    x, y = values["x"], values["y"]
    head = f"(x + y) mod 10 = ({x} + {y}) mod 10"
    if not (x.isdigit() and y.isdigit()):
        return head + ".", None
    result = str((int(x) + int(y)) % 10)
    return f"{head} = {result}.", result


def stated_values(text: str, name: str) -> list[str]:
    """Every value ``text`` states for sub-result ``name`` ("x = ... = 2." or "x = 2.")."""
    return _stated_re(name).findall(text)


@functools.lru_cache(maxsize=None)
def _stated_re(name: str) -> re.Pattern:
    # Whole numbers only: "x = 2.5." states 2.5, not 2; "_x" or "box" is not x.
    return re.compile(rf"(?<!\w){re.escape(name)} = (?:\([^()=]*\) mod 10 = )?(\d+)(?![\d.]*\d)")


def answer_sentence(answer: str) -> str:
    """The sink's target reply for an answer, in the synthetic tasks' format."""
    return f"The answer is {answer}."


def split_of(question: str) -> str:
    """The split a question belongs to, stable across processes and Python versions."""
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big") % 100
    return "eval" if bucket < EVAL_PERCENT else "train"


@functools.lru_cache(maxsize=None)
def _pool(kind: str, split: str) -> tuple[tuple[str, str], ...]:
    """Every distinct (question, answer) of a kind that falls in a split, in a fixed order."""
    ranges, build = _GENERATORS[kind]
    pairs = (build(*digits) for digits in itertools.product(*ranges))
    return tuple((q, str(ans)) for q, ans in pairs if split_of(q) == split)


def split_size(kind: str, split: str) -> int:
    """How many distinct questions of ``kind`` fall in ``split``."""
    _check(kind, split, 0)
    return len(_pool(kind, split))


def _check(kind: str, split: str, n: int) -> None:
    if kind not in _GENERATORS:
        raise ValueError(f"unknown synthetic kind {kind!r}; known: {', '.join(KINDS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")


def make_synthetic(kind: str, split: str, n: int, seed: int) -> list[Example]:
    """n examples of a split, deterministic for (kind, split, n, seed).

    Questions are distinct while n fits the split; beyond that (arith has 740 train
    questions) the split is cycled in fresh shuffles, so every question recurs about
    equally often.
    """
    _check(kind, split, n)
    pool = _pool(kind, split)
    rng = random.Random(f"{kind}/{split}/{seed}")
    drawn: list[tuple[str, str]] = []
    while len(drawn) < n:
        drawn += rng.sample(pool, len(pool))
    return [Example(f"{kind}-{split}-{i:06d}", q, a) for i, (q, a) in enumerate(drawn[:n])]


def synthetic_task(kind: str) -> Task:
    _check(kind, "train", 0)
    return Task(name=f"synthetic/{kind}", answer_type="number", answer_format=SYNTHETIC_ANSWER_FORMAT)


def synthetic_corpus(kind: str, n: int, seed: int) -> list[str]:
    """Question texts and their "The answer is N." targets (training split), for
    training a tokenizer that covers exactly the task's text."""
    corpus: list[str] = []
    for example in make_synthetic(kind, "train", n, seed):
        corpus += [example.question, answer_sentence(example.answer)]
    return corpus
