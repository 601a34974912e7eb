"""The rollout queue: which questions each step samples, what async mode launches ahead, and
the data cursor a checkpoint resumes from. StepRollout (tested against real workers in
test_rollouts.py) is replaced by a record of what it was launched with."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from neuromas_dist.config import load_config
from neuromas_dist.driver import rollout_queue
from neuromas_dist.driver.rollout_queue import RolloutQueue

QUESTIONS = list(range(20))  # the sampler only shuffles and slices them


@pytest.fixture(autouse=True)
def recorded_rollouts(monkeypatch):
    monkeypatch.setattr(rollout_queue, "StepRollout", lambda pool, step, examples, n, cursor: SimpleNamespace(
        step=step, examples=examples, cursor=cursor, cancelled=False))


def _queue(*overrides: str) -> RolloutQueue:
    return RolloutQueue(load_config(None, ["trainer.questions_per_step=2", "trainer.steps=6", *overrides]), QUESTIONS)


def test_a_checkpoint_during_a_step_resumes_before_that_step_s_questions():
    q = _queue("trainer.mode=async", "trainer.max_staleness=1")
    start = q.cursor_after
    first = q.next(None, 1)  # step 1 under way: the sampler has moved past its questions
    assert q.cursor_after == start  # a checkpoint of step 0 taken now redraws them
    q.launch_ahead(None, 1)
    second = q.in_flight[0]
    q.step_done()  # step 1 ended while step 2 samples: its checkpoint resumes before step 2's questions
    assert q.cursor_after == second.cursor != start
    resumed = _queue("trainer.mode=async", "trainer.max_staleness=1")
    resumed.restore(q.cursor_after)
    assert resumed.next(None, 2).examples == second.examples
    assert first.examples != second.examples


def test_async_launches_ahead_up_to_the_staleness_and_never_across_growth_or_the_end():
    q = _queue("trainer.mode=async", "trainer.max_staleness=2", "trainer.growth=[{at_step: 4, widths: [4, 2, 1]}]",
               "trainer.growth_mode=carry")
    q.next(None, 1)
    q.launch_ahead(None, 1)
    assert [r.step for r in q.in_flight] == [2, 3]  # step 4 runs the grown graph: not launched from step 1
    q.next(None, 2)
    q.launch_ahead(None, 2)
    assert [r.step for r in q.in_flight] == [3]
    assert q.next(None, 3).step == 3
    q.launch_ahead(None, 3)
    assert not q.in_flight
    assert q.next(None, 4).step == 4  # launched now, on the grown graph
    q.launch_ahead(None, 4)
    assert [r.step for r in q.in_flight] == [5, 6]
    q.next(None, 5)
    q.launch_ahead(None, 5)
    assert [r.step for r in q.in_flight] == [6]  # not past trainer.steps


def test_sync_mode_launches_nothing_ahead():
    q = _queue()
    q.next(None, 1)
    q.launch_ahead(None, 1)
    assert not q.in_flight
