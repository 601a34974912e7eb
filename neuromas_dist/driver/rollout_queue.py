"""Which questions each step samples, and the steps already sampling ahead of the learner."""

from __future__ import annotations

from collections import deque
from typing import Any, Sequence

from neuromas_dist.config import Config
from neuromas_dist.driver.growth import crosses_growth
from neuromas_dist.driver.rollouts import StepRollout, WorkerPool
from neuromas_dist.driver.sampler import QuestionSampler
from neuromas_dist.tasks.base import Example


class RolloutQueue:
    """Step rollouts in step order. Sync mode launches a step's rollout when the step
    starts; async mode keeps ``max_staleness`` later steps sampling while the learner
    updates, never past the run's end nor across a growth step (they need the grown graph)."""

    def __init__(self, cfg: Config, train: Sequence[Example]):
        self.cfg = cfg
        self.sampler = QuestionSampler(train, cfg.trainer.seed)
        self.in_flight: deque[StepRollout] = deque()
        # where a checkpoint of the last done step resumes
        self.cursor_after: dict[str, Any] = self.sampler.state_dict()

    def next(self, pool: WorkerPool, step: int) -> StepRollout:
        return self.in_flight.popleft() if self.in_flight else self._launch(pool, step)

    def launch_ahead(self, pool: WorkerPool, step: int) -> None:
        t = self.cfg.trainer
        ahead = t.max_staleness if t.mode == "async" else 0
        while len(self.in_flight) < ahead:
            later = step + 1 + len(self.in_flight)
            if later > t.steps or crosses_growth(self.cfg, step, later):
                return
            self.in_flight.append(self._launch(pool, later))

    def step_done(self) -> None:
        """The step in progress ended: a checkpoint of it resumes before the next step's questions."""
        self.cursor_after = self.in_flight[0].cursor if self.in_flight else self.sampler.state_dict()

    def drop(self) -> None:
        """Cancel the rollouts in flight (their steps will be sampled again)."""
        for rollout in self.in_flight:
            rollout.cancel()
        self.in_flight.clear()

    def restore(self, cursor: dict[str, Any]) -> None:
        self.sampler.load_state_dict(cursor)
        self.cursor_after = self.sampler.state_dict()

    def _launch(self, pool: WorkerPool, step: int) -> StepRollout:
        cursor = self.sampler.state_dict()
        examples = self.sampler.next_batch(self.cfg.trainer.questions_per_step)
        return StepRollout(pool, step, examples, self.cfg.sampling.n_samples, cursor)
