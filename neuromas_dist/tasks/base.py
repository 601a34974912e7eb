"""Examples, scores and the Task that turns a sink node's reply into a reward.

NeuroMAS trains every node from one terminal reward per example, so the reward is the
whole training signal: a function (reply text, example) -> float. A reply with no
parsable answer earns 0.0 like any wrong answer; it never raises, because one odd
generation must not stop a rollout batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from neuromas_dist.tasks.answers import ANSWER_TYPES, answers_match, extract_answer


class Example(NamedTuple):
    id: str
    question: str
    answer: str  # normalised gold answer, as answers.py extracts it


class Score(NamedTuple):
    reward: float
    parsed: str | None  # None = no parsable answer in the reply


RewardFn = Callable[[str, Example], float]

# What the sink node is told; each matches what its extractor looks for.
ANSWER_FORMATS = {
    "number": 'End your reply with "The answer is N." where N is a number.',
    "boxed": "End your reply with the final answer inside \\boxed{}.",
    "choice": 'End your reply with "The answer is (X)." where X is the letter of the correct option.',
}


@dataclass(frozen=True)
class Task:
    name: str
    answer_type: str  # "number" | "boxed" | "choice"
    answer_format: str  # instruction shown to the sink node

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"task {self.name!r}: unknown answer_type {self.answer_type!r}; "
                             f"known: {', '.join(ANSWER_TYPES)}")

    def extract(self, text: str) -> str | None:
        return extract_answer(text, self.answer_type)

    def score(self, text: str, example: Example) -> Score:
        parsed = self.extract(text)
        matched = answers_match(parsed, example.answer, self.answer_type)
        return Score(1.0 if matched else 0.0, parsed)

    def reward(self, text: str, example: Example) -> float:
        """The default RewardFn: 1.0 for a correct answer, else 0.0."""
        return self.score(text, example).reward


def make_task(name: str, answer_type: str) -> Task:
    """A Task with the standard sink instruction for its answer type."""
    if answer_type not in ANSWER_FORMATS:
        raise ValueError(f"task {name!r}: unknown answer_type {answer_type!r}; known: {', '.join(ANSWER_TYPES)}")
    return Task(name=name, answer_type=answer_type, answer_format=ANSWER_FORMATS[answer_type])
