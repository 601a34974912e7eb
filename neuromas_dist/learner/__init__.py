"""DeepSpeed learner: joint REINFORCE over per-node LoRA adapters (see rank.py for the step).

The rank itself (``learner.rank.LearnerRank``) is not imported here: its module loads PEFT
and transformers' model classes, which the driver, importing this package for the group and
its checkpoints, never runs."""

from neuromas_dist.learner.learner import LearnerGroup
from neuromas_dist.learner.stats import LogprobGapError

__all__ = ["LearnerGroup", "LogprobGapError"]
