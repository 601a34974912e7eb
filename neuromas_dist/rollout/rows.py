"""Finished samples -> scored trajectory rows (pure functions).

The reward is computed once per sample from its answer (the sink's text, or what a
program returned) and copied onto every call's row: one terminal reward trains every
agent. Bad output (empty, no parsable
answer, cut at max tokens, a checker that raises) is scored by the task's rule, which
gives 0 for no answer, and counted under a ``rollout/flag_*`` key; it never raises.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, NamedTuple

from neuromas_dist.rollout.executor import FINISH_ABORT, SampleResult
from neuromas_dist.rollout.program.episode import faulted
from neuromas_dist.tasks.base import Example, Task
from neuromas_dist.trajectories.schema import TrajectoryRow
from neuromas_dist.trajectories.summary import sample_record


class Scored(NamedTuple):
    reward: float
    parsed: str | None
    flags: Counter


def score_text(task: Task, text: str, example: Example) -> Scored:
    """``task.score`` guarded: a checker error or a non-finite reward scores 0 (a wrong
    answer) and is flagged, not raised."""
    try:
        return _guarded(text, task.score(text, example))
    except Exception:  # noqa: BLE001 - a bad sample must not end the rollout
        return _guarded(text, None)


async def score_text_async(task: Task, text: str, example: Example) -> Scored:
    """:func:`score_text` through ``task.score_async``: a code task's tests run in the sandbox
    while the event loop (and the engine it feeds) goes on."""
    try:
        return _guarded(text, await task.score_async(text, example))
    except Exception:  # noqa: BLE001 - a bad sample must not end the rollout
        return _guarded(text, None)


def _guarded(text: str, score: Any) -> Scored:
    """The reward and flags of a task's Score (None: its scorer raised)."""
    flags: Counter = Counter()
    if not text.strip():
        flags["rollout/flag_empty"] += 1
    if score is None:
        flags["rollout/flag_score_error"] += 1
        reward, parsed = 0.0, None
    else:
        reward, parsed = float(score.reward), score.parsed
        flags.update(getattr(score, "flags", ()))
    if not math.isfinite(reward):  # a custom reward's NaN/inf would skip the learner's whole step
        flags["rollout/flag_nonfinite_reward"] += 1
        reward = 0.0
    if parsed is None:
        flags["rollout/flag_unparsable"] += 1
    return Scored(reward, None if parsed is None else str(parsed), flags)


async def score_sample(task: Task, result: SampleResult, positions: Mapping[str, tuple[int, int]], worker_id: int
                       ) -> tuple[list[TrajectoryRow], dict[str, float]]:
    """A finished sample's rows and its record for the step's metrics (reward, verdict, every
    flag raised). A program's fault scores the sample 0 without asking the task."""
    if faulted(result.flags):
        scored = Scored(0.0, None, Counter())
    else:
        scored = await score_text_async(task, result.answer, result.spec.example)
    record = sample_record(scored.reward, scored.parsed, scored.flags + call_flags(result), task.answer_type)
    return sample_rows(result, scored, positions, worker_id), record


def call_flags(result: SampleResult) -> Counter:
    """Per-call flags of one sample (cut responses, cut prompts, calls that never ran) and
    its program's faults."""
    flags: Counter = Counter(result.flags)
    for call in result.calls:
        flags["rollout/flag_cut"] += call.finish_reason == "length"
        flags["rollout/flag_prompt_truncated"] += call.prompt_truncated
        flags["rollout/flag_aborted"] += call.finish_reason == FINISH_ABORT
    return flags


def sample_id(question_id: Any, sample_index: int) -> str:
    """The contract's ``sample_id``: unique within a step (a step never holds a question twice)."""
    return f"{question_id}#{sample_index}"


def sample_rows(result: SampleResult, scored: Scored, positions: Mapping[str, tuple[int, int]], worker_id: int
                ) -> list[TrajectoryRow]:
    """One row per call in ``result``, in the order the calls started. ``positions``: each
    agent's (layer, index), a graph node's place or (0, i) for a program's i-th agent."""
    spec = result.spec
    return [TrajectoryRow(
        step=spec.step,
        sample_id=sample_id(spec.example.id, spec.sample_index),
        question_id=str(spec.example.id),
        sample_index=spec.sample_index,
        node=call.node,
        layer=positions[call.node][0],
        node_index=positions[call.node][1],
        call_index=call.call_index,
        prompt_ids=call.prompt_ids,
        response_ids=call.response_ids,
        logprobs=call.logprobs,
        finish_reason=call.finish_reason,
        prompt_truncated=call.prompt_truncated,
        response_truncated=call.finish_reason == "length",
        adapter_version=result.version,
        answer_text=result.answer,
        parsed_answer=scored.parsed,
        reward=scored.reward,
        worker_id=worker_id,
        latency_s=call.latency_s,
        text=call.text,
        question=spec.example.question,
        gold_answer=str(spec.example.answer),
    ) for call in result.calls]
