"""Where a run stands: one object the trainer moves and the loop that logs its rows reads.

Mid-step the three marks differ, and a checkpoint taken after a failure must stand for a
step the run has a record of: the learner may hold an update whose row was never logged
(``applied`` past ``logged``), or a resume may fail before the learner was restored
(``trained`` short of ``logged``). ``why_no_checkpoint`` holds those rules in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Progress:
    trained: int = 0  # the last step trained to the end
    applied: int = 0  # the last step whose update the learner may hold (past ``trained`` mid-step)
    logged: int = 0  # the last step in metrics.jsonl

    def restored(self, step: int) -> None:
        """The learner now holds step ``step``'s checkpoint (resume, or a rebuilt learner)."""
        self.trained = self.applied = step

    def why_no_checkpoint(self) -> str | None:
        """Why the learner's state must not be checkpointed now (None: it is the last logged step's)."""
        if self.applied > self.logged:  # resume redoes the unlogged step instead
            return f"step {self.applied}'s update is not logged"
        if self.trained != self.logged:
            return f"the learner was not restored to step {self.logged}"
        return None
