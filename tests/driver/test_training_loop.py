"""What the loop does when an actor dies: it checkpoints only a learner that holds exactly the
last logged step. The trainer here is a record of what the loop read and asked; the loop with
real actors and real deaths is in test_e2e.py, tests/faults and test_launch_cli.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuromas_dist.config import load_config
from neuromas_dist.driver.progress import Progress
from neuromas_dist.driver.run import EXIT_FAILED, TrainingLoop


class RecordingTrainer:
    def __init__(self, progress: Progress):
        self.progress, self.run_dir, self.saved = progress, Path("/runs/x"), []

    @property
    def step(self) -> int:
        return self.progress.trained

    def checkpoint(self) -> Path:
        self.saved.append(self.step)
        return self.run_dir / "checkpoints" / f"step_{self.step:06d}"


@pytest.mark.parametrize("step, applied, logged, saved, why", [
    (3, 3, 3, [3], "checkpoint /runs/x/checkpoints/step_000003"),  # lost before step 4's update
    (3, 4, 3, [], "step 4's update is not logged"),  # step 4 applied, never logged: resume redoes it
    (4, 4, 4, [4], "checkpoint /runs/x/checkpoints/step_000004"),  # workers lost after step 4 was logged
    (0, 0, 5, [], "not restored to step 5"),  # a resume of step 5 that failed before the learner was
])
def test_a_failure_checkpoints_only_a_learner_at_the_last_logged_step(step, applied, logged, saved, why, capsys):
    trainer = RecordingTrainer(Progress(trained=step, applied=applied, logged=logged))
    loop = TrainingLoop(load_config(None, []), trainer, log=None, stop=None)
    assert loop._failed(RuntimeError("worker 0 died\nsecond line")) == EXIT_FAILED
    assert trainer.saved == saved
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and why in lines[0] and "RuntimeError: second line" in lines[0]
    assert "--resume /runs/x" in lines[0]
