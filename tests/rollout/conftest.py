"""One rollout worker for all real-engine tests: a Ray actor over the tiny model.

The engine is sized for the 7-node topology; 3-node tests switch the worker's
topology (a 7-node adapter set covers the 3-node graph's nodes too). Each test loads
its own adapter version from ``next_version`` so tests do not depend on their order.
"""

from __future__ import annotations

import itertools

import pytest

from neuromas_dist.config import load_config
from neuromas_dist.tasks import make_synthetic, synthetic_task

SEVEN = (2, 2, 2, 1)
THREE = (2, 1)


@pytest.fixture(scope="session")
def rollout_cfg(tiny_model_dir):
    return load_config(None, [
        f"topology.widths={list(SEVEN)}",
        "sampling.max_new_tokens=12",
        "sampling.n_samples=2",
        "rollout.batch_samples=3",
        "rollout.max_num_seqs=64",
        "model.max_model_len=512",
        "model.dtype=float32",
    ])


@pytest.fixture(scope="session")
def task():
    return synthetic_task("arith")


@pytest.fixture(scope="session")
def examples():
    return make_synthetic("arith", "eval", 6, 0)


@pytest.fixture(scope="session")
def base_adapters(tiny_model_dir, rollout_cfg):
    from neuromas_dist.rollout.adapters import zero_adapter_set

    return zero_adapter_set(tiny_model_dir, [f"L{k}N{i}" for k, w in enumerate(SEVEN) for i in range(w)],
                            rollout_cfg.lora)


@pytest.fixture(scope="session")
def next_version():
    counter = itertools.count(1)
    return lambda: next(counter)


@pytest.fixture(scope="session")
def rollout_actor(ray_local, tiny_model_dir, rollout_cfg, task):
    from neuromas_dist.rollout.actors import start_workers

    (actor,) = start_workers(rollout_cfg, model_dir=str(tiny_model_dir), task=task)
    ray_local.get(actor.start.remote())
    yield actor
    ray_local.get(actor.shutdown.remote())
    ray_local.kill(actor)
