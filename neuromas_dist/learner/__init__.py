"""DeepSpeed learner: joint REINFORCE over per-node LoRA adapters (see rank.py for the step)."""

from neuromas_dist.learner.learner import LearnerGroup
from neuromas_dist.learner.rank import LearnerRank, LogprobGapError

__all__ = ["LearnerGroup", "LearnerRank", "LogprobGapError"]
