"""Learner fixtures: in-process world-size-1 ranks over the tiny model (a few seconds each)."""

from __future__ import annotations

import json

import pytest
from learner_helpers import NODES


@pytest.fixture(scope="session")
def vocab(tiny_model_dir) -> int:
    return int(json.loads((tiny_model_dir / "config.json").read_text())["vocab_size"])


@pytest.fixture(scope="session")
def make_rank(tiny_model_dir):
    """Factory: a set-up in-process LearnerRank (world size 1) for a config."""
    from neuromas_dist.learner.rank import LearnerRank

    def make(cfg, nodes=NODES, init_adapters=None, traj_dir=None):
        rank = LearnerRank(cfg, str(tiny_model_dir), nodes, init_adapters=init_adapters, traj_dir=traj_dir)
        rank.setup()
        return rank

    return make
