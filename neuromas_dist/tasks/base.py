"""Examples, scores and the Task that turns a sink node's reply into a reward.

NeuroMAS trains every node from one terminal reward per example, so the reward is the
whole training signal: a function (reply text, example) -> float. A reply with no
parsable answer earns 0.0 like any wrong answer; it never raises, because one odd
generation must not stop a rollout batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from neuromas_dist.programs.entry import import_function
from neuromas_dist.tasks.answers import ANSWER_TYPES, answers_match, extract_answer
from neuromas_dist.tasks.sandbox import (
    CodeJob,
    CodeOutcome,
    Isolation,
    SandboxLimits,
    check,
    check_async,
    job_of,
    require,
)


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


def letter_lines(choices: Sequence[Any]) -> str:
    """Options as lettered lines, "(A) ...", the form the choice extractor reads back."""
    return "\n".join(f"({'ABCDEFGH'[i]}) {c}" for i, c in enumerate(list(choices)[:8]))


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
    answer_type: str  # one of answers.ANSWER_TYPES
    answer_format: str  # instruction shown to the sink node
    reward_fn: str = ""  # data.reward_fn, "package.module:function", replacing the task's own reward

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"task {self.name!r}: unknown answer_type {self.answer_type!r}; "
                             f"known: {', '.join(ANSWER_TYPES)}")

    def extract(self, text: str) -> str | None:
        return extract_answer(text, self.answer_type)

    def score(self, text: str, example: Example) -> Score:
        if self.reward_fn:
            return custom_score(self, text, example)
        parsed = self.extract(text)
        matched = answers_match(parsed, example.answer, self.answer_type)
        return Score(1.0 if matched else 0.0, parsed)

    def reward(self, text: str, example: Example) -> float:
        """The default RewardFn: 1.0 for a correct answer, else 0.0."""
        return self.score(text, example).reward

    async def score_async(self, text: str, example: Example) -> Score:
        """:meth:`score` where scoring may wait (a code task runs its tests in a sandbox)."""
        return self.score(text, example)

    def check_environment(self) -> Isolation | None:
        """Where this task's rewards run untrusted code, the isolation this machine gives it
        (None: no code runs); raises IsolationError when it is weaker than the config requires."""
        return None


@dataclass(frozen=True)
class CodeTask(Task):
    """A function-completion task (HumanEval's layout): the reply's code answers calls from
    the example's tests, which run in a separate judge process (``tasks/sandbox``); 1.0 when
    every test passes. ``parsed`` is the verdict, so trajectories say why a sample scored 0."""

    limits: SandboxLimits = SandboxLimits()
    require: str = "process"  # data.sandbox.require: the weakest isolation a check may run under

    def check_environment(self) -> Isolation:
        return require(self.require)

    def _job(self, text: str, example: Example) -> CodeJob | None:
        code = self.extract(text)
        meta = example.meta or {}
        if code is None or "entry_point" not in meta:
            return None
        return job_of(meta.get("prompt", ""), code, example.answer, meta["entry_point"])

    def _scored(self, outcome: CodeOutcome) -> Score:
        return Score(1.0 if outcome.passed else 0.0, outcome.status,
                     (f"rollout/code_{outcome.status}", f"rollout/code_checks_{outcome.isolation}"))

    def score(self, text: str, example: Example) -> Score:
        if self.reward_fn:
            return custom_score(self, text, example)
        job = self._job(text, example)
        return Score(0.0, None) if job is None else self._scored(check(job, self.limits, self.require))

    async def score_async(self, text: str, example: Example) -> Score:
        if self.reward_fn:
            return custom_score(self, text, example)
        job = self._job(text, example)
        return Score(0.0, None) if job is None else self._scored(await check_async(job, self.limits, self.require))


@functools.lru_cache(maxsize=None)
def resolve_reward_fn(spec: str) -> Callable[[str, str, str], float]:
    """``package.module:function`` -> the function; DataError (one line) when it is not one."""
    return import_function("data.reward_fn", spec, DataError)


def load_hf_dataset(where: str, config: str | None, *args: Any, **kwargs: Any) -> Any:
    """``datasets.load_dataset(*args, **kwargs)``; its many error types are one DataError line
    naming ``where`` (the data set, or the local directory standing in for it)."""
    import datasets

    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - datasets raises many unrelated types; all mean "cannot load"
        first = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"cannot load {where} (config {config!r}): {type(exc).__name__}: {first}") from None


_WARNED: set[tuple[str, str]] = set()


def custom_score(task: Task, text: str, example: Example) -> Score:
    """``data.reward_fn(question, sink_text, gold)``; an exception or a non-finite value scores
    0, is flagged for the rollout metrics and warned about once per process."""
    parsed = task.extract(text)
    try:
        reward = float(resolve_reward_fn(task.reward_fn)(example.question, text, example.answer))
    except Exception as exc:  # noqa: BLE001 - a user's reward must not end the rollout
        return _refused(task.reward_fn, "error", f"raised {type(exc).__name__}: {exc}", parsed)
    if not math.isfinite(reward):
        return _refused(task.reward_fn, "nonfinite", f"returned {reward}", parsed)
    return Score(reward, parsed)


def _refused(spec: str, kind: str, what: str, parsed: str | None) -> Score:
    if (spec, kind) not in _WARNED:
        _WARNED.add((spec, kind))
        print(f"[reward] data.reward_fn={spec} {what}; scored 0 (counted in rollout/flag_reward_fn_{kind})",
              flush=True)
    return Score(0.0, parsed, (f"rollout/flag_reward_fn_{kind}",))


def make_task(name: str, answer_type: str) -> Task:
    """A Task with the standard sink instruction for its answer type."""
    if answer_type not in ANSWER_FORMATS:
        raise ValueError(f"task {name!r}: unknown answer_type {answer_type!r}; known: {', '.join(ANSWER_TYPES)}")
    return Task(name=name, answer_type=answer_type, answer_format=ANSWER_FORMATS[answer_type])


class TaskData(NamedTuple):
    task: Task
    train: list[Example]
    eval: list[Example]
