"""The trainer: the actors of a run and one step through them: questions -> rollout
workers -> streamed trajectories -> learner -> adapters -> rollout workers.

Sync mode is on-policy: step k's rollouts use the adapters of step k-1. Async mode keeps
``max_staleness`` rollouts in flight ahead of the learner, so step k+1's sampling
overlaps step k's update; the learner importance-weights rows whose adapter version
lags. In both modes trajectories reach the learner batch by batch as samples finish,
so forward/backward starts before the last sample of a step is back. The rows go from
the workers to the learner ranks that train them (which also write them to
``trajectories/``); the driver sees each batch's summary only.

The loop around it (when to grow, evaluate, log, checkpoint, recover) is ``run.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import ray
from ray.exceptions import ObjectLostError, RayActorError

from neuromas_dist.adapters.peft_io import AdapterSet, write_adapter_set
from neuromas_dist.analysis.run_eval import RunShape, run_shape
from neuromas_dist.config import Config
from neuromas_dist.driver import checkpoints, growth
from neuromas_dist.driver.evaluation import HeldOut
from neuromas_dist.driver.placement import Placement
from neuromas_dist.driver.progress import Progress
from neuromas_dist.driver.rollout_queue import RolloutQueue
from neuromas_dist.driver.rollouts import WorkerPool, WorkersExhausted, code_isolation
from neuromas_dist.graph.growth import GrowthGate
from neuromas_dist.graph.topology import Topology
from neuromas_dist.learner.learner import LearnerGroup
from neuromas_dist.rollout.warm_pool import take_workers
from neuromas_dist.tasks.data import TaskData
from neuromas_dist.trajectories.parquet import remove_after
from neuromas_dist.trajectories.summary import StepTally


class LearnerLost(RuntimeError):
    """A learner rank died; the run can rebuild the learner from its last checkpoint."""


@dataclass(frozen=True)
class StepOutcome:
    """A trained step: the learner applied its update and ``metrics`` is its row.
    ``failure``: the rollout workers were lost after the update (WorkersExhausted): the step
    is still logged and checkpointed, then the run stops with it."""

    step: int
    metrics: dict[str, Any]
    failure: Exception | None = None


_A = TypeVar("_A")


def _started(actor: _A | None) -> _A:
    """The trainer's learner or worker pool, which :meth:`Trainer.start` makes."""
    if actor is None:
        raise RuntimeError("the trainer's actors are not started (Trainer.start)")
    return actor


def _graph(shape: RunShape) -> Topology:
    """The shape of a run that grows: a graph (the config refuses growth for a program)."""
    if not isinstance(shape, Topology):
        raise TypeError(f"a program has no layers to grow: {shape}")
    return shape


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, model_dir: str, data: TaskData, say: Callable[[str], None]):
        self.cfg, self.run_dir, self.model_dir, self.data, self.say = cfg, run_dir, model_dir, data, say
        self.rollouts = RolloutQueue(cfg, data.train)
        self.held_out = HeldOut(cfg, run_dir, data)
        self.widths = tuple(cfg.topology.widths)
        self.gate: GrowthGate | None = None  # set while a gated grown graph fades in
        self.progress = Progress()  # trained, applied and logged step, shared with the loop that logs
        self.placement = Placement(cfg)
        self.pool: WorkerPool | None = None
        self.code_isolation: dict[str, float] = {}
        self.learner: LearnerGroup | None = None
        self.learner_restarts = 0
        self.checkpoint_costs: list[dict[str, float]] = []  # seconds and bytes of each checkpoint
        self.traj_dir = run_dir / "trajectories" if cfg.logging.save_trajectories else None
        self._last_step_done: float | None = None  # perf_counter when the previous step's update was broadcast

    @property
    def step(self) -> int:  # the last step trained to the end
        return self.progress.trained

    @property
    def topology(self) -> RunShape:
        """The graph now trained, or the program's agents."""
        return run_shape(self.cfg, self.widths)

    # ------------------------------------------------------------ actors

    def start(self, init_adapters: AdapterSet | None = None) -> None:
        self.learner, workers, started = start_actors(
            self.cfg, lambda: self._learner_group(init_adapters),
            lambda: take_workers(self.cfg, self.model_dir, self.data.task, self.placement.rollout_strategies()))
        self.pool = WorkerPool(self.cfg, workers, self.say, task=self.data.task)
        self.code_isolation = code_isolation(started)  # into every step's row
        self.pool.set_topology(self.widths, list(self.cfg.topology.edges), self.gate)
        self.broadcast()

    def _learner_group(self, init_adapters: AdapterSet | None = None) -> LearnerGroup:
        """The learner for the current topology (at start, after a lost rank, after growth)."""
        return LearnerGroup(self.cfg, self.model_dir, self.topology.names, init_adapters=init_adapters,
                            placement_group=self.placement.group,
                            traj_dir=None if self.traj_dir is None else self.traj_dir.resolve())

    def broadcast(self) -> dict[str, float]:
        """Export the learner's adapters once, hand the same object to every worker."""
        t0 = time.perf_counter()
        adapters = _started(self.learner).adapters()
        loaded = _started(self.pool).load_adapters(adapters)
        return {"timing_s/sync": time.perf_counter() - t0, "adapters/version": adapters.version,
                "adapters/bytes": adapters.nbytes(), **loaded}

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
        if self.learner is not None:
            self.learner.shutdown()
        self.placement.remove()

    # ------------------------------------------------------------ checkpoints and recovery

    def resume(self, ckpt: Path) -> None:
        """Restore learner, topology, step and data cursor from a checkpoint directory."""
        self.widths, self.gate, version = checkpoints.saved_graph(ckpt)
        self.start()
        self._restore(ckpt, version)

    def recover_learner(self, why: str) -> Path:
        """A learner rank died: rebuild the learner group from the last checkpoint and go
        back to its step (the caller replays the steps after it). Rollouts in flight are
        dropped: they were sampled for steps that will be sampled again."""
        ckpt = checkpoints.latest_checkpoint(self.run_dir)
        if ckpt is None:
            raise LearnerLost(f"{why}; no checkpoint to rebuild the learner from (trainer.checkpoint_every)")
        self.learner_restarts += 1
        self.rollouts.drop()
        _started(self.learner).shutdown()
        self.widths, self.gate, version = checkpoints.saved_graph(ckpt)
        self.learner = self._learner_group()
        _started(self.pool).set_topology(self.widths, list(self.cfg.topology.edges), self.gate)
        self._restore(ckpt, version)
        return ckpt

    def _restore(self, ckpt: Path, version: int) -> None:
        extra = _started(self.learner).load_checkpoint(ckpt)
        if (held := _started(self.pool).version) is not None and held >= version:
            # The workers hold a newer version than the checkpoint's: its weights get a fresh
            # number, so one version never names two sets of weights (workers only move forward).
            _started(self.learner).set_version(held + 1)
        self.progress.restored(int(extra["step"]))
        self.rollouts.restore(extra["sampler"])
        self.forget_after(self.step)
        self.broadcast()

    def forget_after(self, step: int) -> None:
        """Delete outputs of steps after ``step`` (they will be redone): trajectories and
        held-out passes on disk stay consistent with metrics.jsonl, each step once."""
        if self.traj_dir is not None:
            remove_after(self.traj_dir, step)
        self.held_out.forget_after(step)

    def checkpoint(self) -> Path:
        t0 = time.perf_counter()
        path = checkpoints.checkpoint_dir(self.run_dir, self.step)
        extra = checkpoints.graph_extra(self.widths, self.gate, self.step, self.rollouts.cursor_after)
        try:
            _started(self.learner).save_checkpoint(path, extra=extra)
        except RayActorError as exc:
            raise LearnerLost(f"a learner rank died while checkpointing step {self.step}") from exc
        self.checkpoint_costs.append({"seconds": time.perf_counter() - t0, "bytes": checkpoints.size_bytes(path)})
        return path

    def save_adapters(self, name: str = "adapters") -> dict[str, Path]:
        return write_adapter_set(self.run_dir / name, _started(self.learner).adapters())

    # ------------------------------------------------------------ growth

    def grow_from_run(self, small_run: Path) -> AdapterSet:
        """Initial adapters of this (larger) topology from a smaller run's final adapters."""
        grown, small_topo, how = growth.adapters_from_run(small_run, _graph(self.topology))
        self.say(f"growth from {small_run}: {how}")
        self.gate = growth.growth_gate(self.cfg, small_topo, _graph(self.topology), 0, self.say)  # step 0: small graph
        return grown

    def grow(self, widths: tuple[int, ...]) -> None:
        """Switch to a larger topology mid-run; carried-over nodes keep their adapters.

        The learner is rebuilt for the new node set (its optimizer state restarts: the
        new graph is a new optimisation problem); the rollout engines stay up.
        """
        small_topo, current = _graph(self.topology), _started(self.learner).adapters()
        self.widths = tuple(widths)
        mapped, how = growth.map_adapters(current, small_topo, _graph(self.topology))
        self.say(f"growth: {how}")
        _started(self.learner).shutdown()
        # A fresh version: the workers only install versions newer than the one they hold.
        self.learner = self._learner_group(mapped._replace(version=current.version + 1))
        # grow() runs before step at_step, so self.step = at_step - 1 is the small graph's last
        self.gate = growth.growth_gate(self.cfg, small_topo, _graph(self.topology), self.step, self.say)
        _started(self.pool).set_topology(self.widths, [], self.gate)
        self.broadcast()

    # ------------------------------------------------------------ a step

    def train_step(self, apart: bool = False) -> StepOutcome:
        """Run step ``self.step + 1`` to completion. Raises LearnerLost when a learner rank
        dies (see :meth:`recover_learner`); rollout workers' deaths are handled inside StepRollout.
        ``apart``: the learner starts once the rollout has ended (``benchmarks.balance`` times each phase alone)."""
        try:
            return self._train_step(self.step + 1, apart)
        except RayActorError as exc:
            raise LearnerLost(f"a learner rank died at step {self.step + 1}: {type(exc).__name__}") from exc
        except Exception as exc:
            if lost_object(exc):
                raise LearnerLost(f"step {self.step + 1}: trajectories were lost before a learner rank read them "
                                  f"({type(exc).__name__})") from exc
            raise

    def _train_step(self, step: int, apart: bool) -> StepOutcome:
        rollout = self.rollouts.next(pool := _started(self.pool), step)
        arrivals = list(rollout.batches()) if apart else rollout.batches()
        t_rollout_end = time.perf_counter()
        tally = StepTally()
        for arrival in arrivals:
            _started(self.learner).accumulate(arrival.pieces)  # ranks start forward/backward on it now
            tally.add(arrival.summary)
        t_learn0 = t_rollout_end if apart else time.perf_counter()  # apart: all of learning is the tail
        t_rollout = (t_rollout_end if apart else t_learn0) - rollout.started
        finish = _started(self.learner).finish_step_async()
        # From here the learner may be past the last logged step, a failed gather included
        # (ranks that took their rows apply the update even when another refused a batch).
        self.progress.applied = step
        self.rollouts.launch_ahead(pool, step)  # overlaps the update
        learner_metrics = _started(self.learner).gather(finish)
        t_learn = time.perf_counter() - t_learn0
        failure, sync = None, {}
        try:
            sync = self.broadcast()
        except WorkersExhausted as exc:
            failure = exc  # the step is trained: the run logs and checkpoints it, then stops
        self.progress.trained = step
        self.rollouts.step_done()
        now = time.perf_counter()
        # An async step's rollout started during the step before, so timing_s/step overlaps
        # its neighbours; the interval between step ends is what a step costs the run.
        interval = now - (self._last_step_done or rollout.started)
        self._last_step_done = now
        return StepOutcome(step, {
            **tally.metrics(), **learner_metrics, **sync, **rollout.faults, **self.code_isolation,
            "faults/worker_restarts_total": pool.restarts, "faults/learner_restarts_total": self.learner_restarts,
            "timing_s/rollout": t_rollout, "timing_s/learn_tail": t_learn,
            "timing_s/step": now - rollout.started, "timing_s/step_interval": interval}, failure)

    def evaluate(self) -> dict[str, float]:
        """Held-out accuracy at the current step (``HeldOut.evaluate``)."""
        return self.held_out.evaluate(_started(self.pool), self.topology, self.step)

    def report(self) -> dict[str, Any]:
        """The final report at the current step (``HeldOut.report``)."""
        return self.held_out.report(_started(self.pool), self.topology, self.step)


def start_actors(cfg: Config, learner: Callable[[], LearnerGroup], workers: Callable[[], list[Any]]
                 ) -> tuple[LearnerGroup, list[Any], list[dict[str, float]]]:
    """The learner group, the rollout workers with their engines started, and each worker's
    start gauges. The engines start while the learner ranks set up (5 s of a 30 s start here),
    except where a GPU may hold both (colocated, or fractional shares), as vLLM sizes its KV
    cache from the memory free then."""
    r = cfg.resources
    shared_gpu = r.rollout_gpus > 0 and (r.colocate or r.rollout_gpus % 1 > 0 or r.learner_gpus % 1 > 0)
    group = learner() if shared_gpu else None
    actors = workers()
    engines = [w.start.remote() for w in actors]
    group = group or learner()
    try:
        started = ray.get(engines)  # no deadline on a first engine start (downloads, compiles)
    except BaseException:
        group.shutdown()  # not yet the trainer's to shut down
        raise
    return group, actors, started


def lost_object(exc: BaseException) -> bool:
    """Did a task fail because an object it needed was lost? A rollout node can die after
    its batch's summary reached the driver but before a learner rank fetched the piece
    (the driver does not copy rows). The step cannot be completed from the rows that
    remain, so it is treated like a lost rank: back to the last checkpoint and replay."""
    return isinstance(exc, ObjectLostError) or isinstance(getattr(exc, "cause", None), ObjectLostError)
