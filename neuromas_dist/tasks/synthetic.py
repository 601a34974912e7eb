"""Seeded synthetic tasks that need no download: single-digit modular arithmetic.

"arith" is the question the tiny local model is warmed up on. "hier" composes two
independent sub-results, x = g(a, b) and y = h(c, d), into f(x, y): a graph whose
first layer works out x and y separately has something real to split.

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
from collections.abc import Callable

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


# kind -> (number of digit operands, question builder)
_GENERATORS: dict[str, tuple[int, Callable[..., tuple[str, int]]]] = {
    "arith": (3, _arith),
    "hier": (4, _hier),
}
KINDS = tuple(_GENERATORS)


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
    arity, build = _GENERATORS[kind]
    pairs = (build(*digits) for digits in itertools.product(range(10), repeat=arity))
    return tuple((q, str(ans)) for q, ans in pairs if split_of(q) == split)


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
