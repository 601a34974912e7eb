"""Rollout workers as Ray actors.

Each worker is an async actor (its methods share one event loop, so a hot swap can
land while a rollout is running) with its own CPUs/GPUs from ``cfg.resources``.
"""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from neuromas_dist.config import Config
from neuromas_dist.rollout.worker import RolloutWorker
from neuromas_dist.tasks.base import Task

T = TypeVar("T")
NODE_RESOURCE_SHARE = 0.001  # of a node's custom resource per bundle or actor: any number fit one node


def actor_options(cfg: Config) -> dict[str, Any]:
    """Ray resources of one worker; vLLM's engine core runs as a child of the actor.

    Ray restarts a dead worker from its constructor arguments; calls that were running
    are not retried (``max_task_retries=0``): the driver knows which samples were lost
    and redoes exactly those (driver.rollouts)."""
    opts: dict[str, Any] = {"num_cpus": cfg.resources.rollout_cpus, "max_concurrency": 1000,
                            "max_restarts": cfg.faults.max_worker_restarts, "max_task_retries": 0}
    if cfg.resources.rollout_gpus > 0:
        opts["num_gpus"] = cfg.resources.rollout_gpus
    if cfg.rollout.keep_warm and cfg.resources.rollout_node_resource:  # no placement-group bundle says it
        opts["resources"] = {cfg.resources.rollout_node_resource: NODE_RESOURCE_SHARE}
    return opts


def start_workers(cfg: Config, *, model_dir: str | None = None, task: Task | None = None,
                  scheduling_strategies: Sequence[PlacementGroupSchedulingStrategy] | None = None) -> list[Any]:
    """Start ``cfg.rollout.num_workers`` actors (engines start lazily on first use or
    on ``worker.start.remote()``). ``scheduling_strategies``: one per worker, e.g.
    placement-group bundles chosen by the driver."""
    cls = ray.remote(RolloutWorker)
    actors = []
    for i in range(cfg.rollout.num_workers):
        opts = actor_options(cfg)
        if scheduling_strategies:
            opts["scheduling_strategy"] = scheduling_strategies[i]
        actors.append(cls.options(**opts).remote(cfg, i, model_dir=model_dir, task=task))
    return actors


def shut_down_workers(actors: Sequence[Any], timeout_s: float = 30.0) -> None:
    """Close each worker's engine, then end the actor (no restart)."""
    if not ray.is_initialized():
        return
    for actor in actors:
        try:
            ray.get(actor.shutdown.remote(), timeout=timeout_s)
        except Exception:  # noqa: BLE001 - a dead or stuck worker has nothing left to close
            pass
        ray.kill(actor, no_restart=True)


def split_examples(examples: Sequence[T], parts: int) -> list[list[T]]:
    """Contiguous near-equal shares, so all samples of a question stay on one worker."""
    size, extra = divmod(len(examples), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        out.append(list(examples[start:end]))
        start = end
    return out
