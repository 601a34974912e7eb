"""Examples, scores and the Task that turns a sink node's reply into a reward.

NeuroMAS trains every node from one terminal reward per example, so the reward is the
whole training signal: a function (reply text, example) -> float. A reply with no
parsable answer earns 0.0 like any wrong answer; it never raises, because one odd
generation must not stop a rollout batch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from neuromas_dist.tasks.answers import ANSWER_TYPES, answers_match, extract_answer


class Example(NamedTuple):
    id: str
    question: str
    answer: str  # normalised gold answer, as answers.py extracts it (a code task: its tests)
    meta: Mapping[str, Any] | None = None  # what a task's scorer needs beyond the answer (code: prompt, entry point)


class Score(NamedTuple):
    reward: float
    parsed: str | None  # None = no parsable answer in the reply
    flags: tuple[str, ...] = ()  # metric names to count once (e.g. rollout/code_timeout)


RewardFn = Callable[[str, Example], float]


class DataError(ValueError):
    """A data problem, in one line naming the file (or data set) and row."""


def cap(examples: list[Example], n: int) -> list[Example]:
    """The first n examples (0 = all): a prefix keeps ids and order stable across runs."""
    return examples[:n] if n > 0 else examples

# What the sink node is told; each matches what its extractor looks for.
ANSWER_FORMATS = {
    "number": 'End your reply with "The answer is N." where N is a number.',
    "boxed": "End your reply with the final answer inside \\boxed{}.",
    "choice": 'End your reply with "The answer is (X)." where X is the letter of the correct option.',
    "yesno": 'End your reply with "The answer is Yes." or "The answer is No."',
    "code": "Reply with the complete function in one ```python code block.",
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

    async def score_async(self, text: str, example: Example) -> Score:
        """:meth:`score` where scoring may wait (a code task runs its tests in a sandbox)."""
        return self.score(text, example)


@dataclass(frozen=True)
class CodeTask(Task):
    """A function-completion task (HumanEval's layout): the reply's code runs against the
    example's tests in the sandbox (``tasks/sandbox.py``); 1.0 when every test passes.
    ``parsed`` is the sandbox's verdict, so trajectories say why a sample scored 0."""

    timeout_s: float = 5.0
    memory_mb: int = 512

    def _job(self, text: str, example: Example) -> tuple[str, str] | None:
        from neuromas_dist.tasks.sandbox import program_of

        code = self.extract(text)
        meta = example.meta or {}
        if code is None or "entry_point" not in meta:
            return None
        # a reply holding the whole function replaces the prompt's stub; a bare body continues it
        prompt = meta.get("prompt", "")
        body_only = f"def {meta['entry_point']}" not in code
        return program_of(prompt if body_only else prompt + "\n    pass\n\n", code, example.answer), meta["entry_point"]

    def _scored(self, outcome: Any) -> Score:
        return Score(1.0 if outcome.passed else 0.0, outcome.status, (f"rollout/code_{outcome.status}",))

    def _limits(self) -> Any:
        from neuromas_dist.tasks.sandbox import SandboxLimits

        return SandboxLimits(timeout_s=self.timeout_s, memory_mb=self.memory_mb)

    def score(self, text: str, example: Example) -> Score:
        from neuromas_dist.tasks.sandbox import check

        job = self._job(text, example)
        return Score(0.0, None) if job is None else self._scored(check(*job, self._limits()))

    async def score_async(self, text: str, example: Example) -> Score:
        from neuromas_dist.tasks.sandbox import check_async

        job = self._job(text, example)
        return Score(0.0, None) if job is None else self._scored(await check_async(*job, self._limits()))


def make_task(name: str, answer_type: str) -> Task:
    """A Task with the standard sink instruction for its answer type."""
    if answer_type not in ANSWER_FORMATS:
        raise ValueError(f"task {name!r}: unknown answer_type {answer_type!r}; known: {', '.join(ANSWER_TYPES)}")
    return Task(name=name, answer_type=answer_type, answer_format=ANSWER_FORMATS[answer_type])


class TaskData(NamedTuple):
    task: Task
    train: list[Example]
    eval: list[Example]
