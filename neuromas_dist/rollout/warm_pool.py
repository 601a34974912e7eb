"""Rollout workers kept between the runs of one process (``rollout.keep_warm``).

A table's arms or a sweep run one after another in one process, and each run would start
its vLLM engines again (the engine core is a spawned process importing vLLM): on 2 CPU cores
the tests' small run took 43 s with new workers and 16 s with kept ones (docs/tests.md). A run that keeps them warm
parks its workers here when it ends; the next run whose engines would be built exactly the
same way (:func:`engine_key`) takes them, and each worker swaps in the new run's config and
task (:meth:`RolloutWorker.reuse`). A worker that cannot be reused is shut down and the run
starts its own. One set is parked at a time: a run of another key shuts it down first, as
two idle engines would hold two KV caches. What is parked at exit is shut down then.
"""

from __future__ import annotations

import atexit
from typing import Any, Sequence

import ray
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from neuromas_dist.config import Config
from neuromas_dist.rollout.actors import actor_options, shut_down_workers, start_workers
from neuromas_dist.rollout.engine import engine_kwargs
from neuromas_dist.tasks.base import Task

REUSE_S = 30.0  # for a parked worker to empty its engine for the next run


def engine_key(cfg: Config, model_dir: str) -> tuple[Any, ...]:
    """What a worker set is: its engines' arguments, its actors' Ray options, how many."""
    return (str(model_dir), engine_kwargs(cfg, model_dir, seed=cfg.trainer.seed), actor_options(cfg),
            cfg.rollout.num_workers)


class _Parked:
    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.actors: list[Any] = []
        self.lent: dict[str, tuple[Any, ...]] = {}  # actor id -> key, for workers a run holds
        self.hooked = False


_PARKED = _Parked()


def take_workers(cfg: Config, model_dir: str, task: Task,
                 scheduling_strategies: Sequence[PlacementGroupSchedulingStrategy] | None = None) -> list[Any]:
    """The run's rollout workers: the parked ones when they fit (reconfigured for ``cfg``),
    otherwise new ones (``start_workers``)."""
    if not cfg.rollout.keep_warm:
        return start_workers(cfg, model_dir=model_dir, task=task, scheduling_strategies=scheduling_strategies)
    key = engine_key(cfg, model_dir)
    actors = _reuse(key, cfg, task)
    if actors is None:
        release()
        actors = start_workers(cfg, model_dir=model_dir, task=task, scheduling_strategies=scheduling_strategies)
    for actor in actors:
        _PARKED.lent[actor._actor_id.hex()] = key
    return actors


def _reuse(key: tuple[Any, ...], cfg: Config, task: Task) -> list[Any] | None:
    if _PARKED.key != key:
        return None
    actors, _PARKED.key, _PARKED.actors = _PARKED.actors, None, []
    try:
        ray.get([a.reuse.remote(cfg, task) for a in actors], timeout=REUSE_S)
    except Exception:  # noqa: BLE001 - dead, stuck, or refused: the run starts workers of its own
        shut_down_workers(actors)
        return None
    return actors


def give_back(actors: Sequence[Any], reusable: bool) -> bool:
    """A run is done with ``actors``. Parks them for the next run when they were taken for a run
    that keeps them warm and are ``reusable`` (no worker was lost); False otherwise: the caller
    shuts them down."""
    keys = [_PARKED.lent.pop(a._actor_id.hex(), None) for a in actors]
    if not reusable or not actors or keys[0] is None or any(k != keys[0] for k in keys):
        return False
    release()
    _PARKED.key, _PARKED.actors = keys[0], list(actors)
    if not _PARKED.hooked:  # before Ray's own exit hook, which would kill the actors first
        atexit.register(release)
        _PARKED.hooked = True
    return True


def parked() -> list[Any]:
    """The workers parked now (tests look at them)."""
    return list(_PARKED.actors)


def release() -> None:
    """Shut the parked workers down (a run of another key, the end of a table, exit)."""
    actors, _PARKED.key, _PARKED.actors = _PARKED.actors, None, []
    shut_down_workers(actors)
