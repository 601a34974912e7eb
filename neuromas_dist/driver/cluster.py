"""Joining a Ray cluster or starting an embedded one, and the placement of the actors."""

from __future__ import annotations

import os
from typing import Any

import ray

from neuromas_dist.config import Config

# Passed to every actor: set before torch/DeepSpeed/vLLM import inside the actor process.
_CPU_ENV = {"DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false"}


def actor_env(cfg: Config) -> dict[str, str]:
    env = {"TOKENIZERS_PARALLELISM": "false"}
    if cfg.resources.learner_gpus == 0:
        env.update(_CPU_ENV)
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "NEUROMAS_CACHE", "HF_HOME"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env


def cluster_address(cfg: Config) -> str | None:
    """The cluster to join: the config's, else RAY_ADDRESS (set by `ray job submit`), else none."""
    return cfg.resources.ray_address or os.environ.get("RAY_ADDRESS") or None


def needed_cpus(cfg: Config) -> float:
    r = cfg.resources
    return cfg.rollout.num_workers * r.rollout_cpus + cfg.learner.num_ranks * r.learner_cpus


def init_ray(cfg: Config) -> dict[str, Any]:
    """Start or join Ray; returns a short description for the run header."""
    if ray.is_initialized():  # a caller (a notebook, a test) already chose the cluster
        return {"ray": "already initialised by the caller"}
    address = cluster_address(cfg)
    env = {"env_vars": actor_env(cfg)}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=True)
        return {"ray": f"joined {address}"}
    # Logical CPUs: the actors mostly wait on each other, so on a 2-core box we still
    # declare enough CPUs for every actor's bundle rather than refusing to schedule.
    cpus = max(os.cpu_count() or 1, int(needed_cpus(cfg) + 1))
    ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=env, log_to_driver=False,
             configure_logging=False)
    return {"ray": f"embedded local Ray ({cpus} logical CPUs)"}
