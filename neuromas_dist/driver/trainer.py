"""The training loop: questions -> rollout workers -> streamed trajectories -> learner ->
adapters -> rollout workers.

Sync mode is on-policy: step k's rollouts use the adapters of step k-1. Async mode keeps
``max_staleness`` rollouts in flight ahead of the learner, so step k+1's sampling
overlaps step k's update; the learner importance-weights rows whose adapter version
lags. In both modes trajectories reach the learner batch by batch as samples finish,
so forward/backward starts before the last sample of a step is back. The rows go from
the workers to the learner ranks that train them (which also write them to
``trajectories/``); the driver sees each batch's summary only.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from neuromas_dist.adapters.peft_io import AdapterSet, read_adapter_set, write_adapter_set
from neuromas_dist.config import Config
from neuromas_dist.driver.metrics import MetricsLogger
from neuromas_dist.driver.placement import Placement
from neuromas_dist.driver.rollouts import StepRollout, WorkerPool, WorkersExhausted, short_error
from neuromas_dist.driver.sampler import QuestionSampler
from neuromas_dist.graph.growth import GrowthGate, describe_growth, growth_mapping
from neuromas_dist.graph.topology import Topology
from neuromas_dist.trajectories.parquet import remove_after
from neuromas_dist.trajectories.summary import StepTally


class LearnerLost(RuntimeError):
    """A learner rank died; the run can rebuild the learner from its last checkpoint."""


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, model_dir: str, data: Any, log: MetricsLogger,
                 say: Callable[[str], None]):
        self.cfg, self.run_dir, self.model_dir, self.data, self.log, self.say = cfg, run_dir, model_dir, data, log, say
        self.sampler = QuestionSampler(data.train, cfg.trainer.seed)
        self.widths = tuple(cfg.topology.widths)
        self.step = 0
        self.placement = Placement(cfg)
        self.pool: WorkerPool | None = None
        self.learner: Any = None
        self.learner_restarts = 0
        self.checkpoint_costs: list[dict[str, float]] = []  # seconds and bytes of each checkpoint
        self.traj_dir = run_dir / "trajectories" if cfg.logging.save_trajectories else None
        self.in_flight: deque[StepRollout] = deque()
        self.last_eval: tuple[int, Any] | None = None  # (step, analysis.evaluation.EvalPass)
        self.gate: GrowthGate | None = None  # set while a gated grown graph fades in
        self._cursor_after: dict[str, Any] | None = None  # the data cursor a checkpoint of this step resumes from
        self.unlogged_update = False  # a checkpoint now would hold an update whose step is not logged
        self.deferred_failure: Exception | None = None  # workers lost after the step's update: stop once it is logged
        self._last_step_done: float | None = None  # perf_counter when the previous step's update was broadcast

    # ------------------------------------------------------------ setup

    @property
    def workers(self) -> list[Any]:
        return self.pool.actors if self.pool is not None else []

    @property
    def topology(self) -> Topology:
        return Topology.of_config(self.widths, self.cfg.topology.edges)

    def start(self, init_adapters: AdapterSet | None = None) -> None:
        from neuromas_dist.rollout.actors import start_workers

        self.learner = self._learner_group(init_adapters)
        import ray

        workers = start_workers(self.cfg, model_dir=self.model_dir, task=self.data.task,
                                scheduling_strategies=self.placement.rollout_strategies())
        ray.get([w.start.remote() for w in workers])  # no deadline on a first engine start (downloads, compiles)
        self.pool = WorkerPool(self.cfg, workers, self.say)
        self._set_topology(list(self.cfg.topology.edges))
        self.broadcast()

    def _learner_group(self, init_adapters: AdapterSet | None = None) -> Any:
        """The learner for the current topology (at start, after a lost rank, after growth)."""
        from neuromas_dist.learner.learner import LearnerGroup

        return LearnerGroup(self.cfg, self.model_dir, self.topology.names, init_adapters=init_adapters,
                            placement_group=self.placement.group,
                            traj_dir=None if self.traj_dir is None else self.traj_dir.resolve())

    def _set_topology(self, edges: list[str]) -> None:
        self.pool.set_topology(self.widths, edges, self.gate)

    def _gate(self, small: Topology, last_small_step: int) -> GrowthGate | None:
        """The growth gate of a graph grown from ``small`` after step ``last_small_step``
        (None in carry mode, or with no fade: then every node runs at once)."""
        t = self.cfg.trainer
        if t.growth_mode != "gated" or t.growth_fade_steps == 0:
            return None
        gate = GrowthGate.build(small, self.topology, last_small_step, t.growth_fade_steps, t.seed)
        self.say(f"growth gated: step {last_small_step + 1} runs the grown graph on 1/{t.growth_fade_steps} of "
                 f"its samples, step {last_small_step + t.growth_fade_steps} on all; the rest run "
                 f"{list(small.widths)} on nodes {', '.join(gate.carried.values())}")
        return gate

    def broadcast(self) -> dict[str, float]:
        """Export the learner's adapters once, hand the same object to every worker."""
        t0 = time.perf_counter()
        adapters = self.learner.adapters()
        self.pool.load_adapters(adapters)
        return {"timing_s/sync": time.perf_counter() - t0, "adapters/version": adapters.version,
                "adapters/bytes": adapters.nbytes()}

    def resume(self, ckpt: Path) -> None:
        """Restore learner, topology, step and data cursor from a checkpoint directory."""
        saved = self._graph_from(ckpt)
        self.start()
        self._restore(ckpt, saved)

    def recover_learner(self, why: str) -> Path:
        """A learner rank died: rebuild the learner group from the last checkpoint and go
        back to its step (the caller replays the steps after it). Rollouts in flight are
        dropped: they were sampled for steps that will be sampled again."""
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            raise LearnerLost(f"{why}; no checkpoint to rebuild the learner from (trainer.checkpoint_every)")
        self.learner_restarts += 1
        for rollout in self.in_flight:
            rollout.cancel()
        self.in_flight.clear()
        self.learner.shutdown()
        saved = self._graph_from(ckpt)
        self.learner = self._learner_group()
        self._set_topology(list(self.cfg.topology.edges))
        self._restore(ckpt, saved)
        return ckpt

    def _graph_from(self, ckpt: Path) -> dict[str, Any]:
        """Topology and growth gate of a checkpoint; returns its learner state."""
        from neuromas_dist.learner.checkpoint import read_learner_state

        saved = read_learner_state(ckpt)
        extra = saved.get("extra", {})
        self.widths = tuple(extra["widths"])
        self.gate = GrowthGate.from_dict(extra["gate"]) if extra.get("gate") else None  # as saved, not as configured now
        return saved

    def _restore(self, ckpt: Path, saved: dict[str, Any]) -> None:
        extra = self.learner.load_checkpoint(ckpt)
        if self.pool.version is not None and self.pool.version >= int(saved["version"]):
            # The workers hold a newer version than the checkpoint's: its weights get a fresh
            # number, so one version never names two sets of weights (workers only move forward).
            self.learner.set_version(self.pool.version + 1)
        self.step = int(extra["step"])
        self.sampler.load_state_dict(extra["sampler"])
        self._cursor_after = self.sampler.state_dict()
        self.unlogged_update = False
        self.forget_after(self.step)
        self.broadcast()

    def forget_after(self, step: int) -> None:
        """Delete outputs of steps after ``step`` (they will be redone): trajectories and
        held-out passes on disk stay consistent with metrics.jsonl, each step once."""
        from neuromas_dist.analysis.run_eval import step_of_pass

        if self.traj_dir is not None:
            remove_after(self.traj_dir, step)
        for path in (self.run_dir / "eval" / "trajectories").glob("step_*"):
            if step_of_pass(path.name) > step:
                path.unlink()

    def grow_from_run(self, small_run: Path) -> AdapterSet:
        """Initial adapters of this (larger) topology from a smaller run's final adapters."""
        grown, small_topo, how = adapters_from_run(small_run, self.topology)
        self.say(f"growth from {small_run}: {how}")
        self.gate = self._gate(small_topo, 0)  # step 0 (evaluation only) runs the small graph
        return grown

    def _mapped(self, small: AdapterSet, small_topo: Topology, large: Topology) -> AdapterSet:
        grown, how = map_adapters(small, small_topo, large)
        self.say(f"growth: {how}")
        return grown

    def grow(self, widths: tuple[int, ...]) -> None:
        """Switch to a larger topology mid-run; carried-over nodes keep their adapters.

        The learner is rebuilt for the new node set (its optimizer state restarts: the
        new graph is a new optimisation problem); the rollout engines stay up.
        """
        small_topo, current = self.topology, self.learner.adapters()
        self.widths = tuple(widths)
        # A fresh version: the workers only install versions newer than the one they hold.
        mapped = self._mapped(current, small_topo, self.topology)._replace(version=current.version + 1)
        self.learner.shutdown()
        self.learner = self._learner_group(mapped)
        self.gate = self._gate(small_topo, self.step)  # grow() runs before step at_step: self.step = at_step - 1
        self._set_topology([])
        self.broadcast()

    # ------------------------------------------------------------ steps

    def launch(self, step: int) -> StepRollout:
        cursor = self.sampler.state_dict()
        examples = self.sampler.next_batch(self.cfg.trainer.questions_per_step)
        return StepRollout(self.pool, step, examples, self.cfg.sampling.n_samples, cursor)

    def train_step(self) -> dict[str, Any]:
        """Run step ``self.step + 1`` to completion; returns its metrics row. Raises
        LearnerLost when a learner rank dies (see :meth:`recover_learner`)."""
        from ray.exceptions import RayActorError

        try:
            return self._train_step()
        except RayActorError as exc:  # rollout workers' deaths are handled inside StepRollout
            raise LearnerLost(f"a learner rank died at step {self.step + 1}: {type(exc).__name__}") from exc
        except Exception as exc:
            if lost_object(exc):
                raise LearnerLost(f"step {self.step + 1}: trajectories were lost before a learner rank read them "
                                  f"({type(exc).__name__})") from exc
            raise

    def _train_step(self) -> dict[str, Any]:
        step = self.step + 1
        ahead = self.cfg.trainer.max_staleness if self.cfg.trainer.mode == "async" else 0
        if not self.in_flight:
            self.in_flight.append(self.launch(step))
        rollout = self.in_flight.popleft()
        tally = StepTally()
        for arrival in rollout.batches():
            self.learner.accumulate(arrival.pieces)  # ranks start forward/backward on it now
            tally.add(arrival.summary)
        t_rollout = time.perf_counter() - rollout.started
        t_learn0 = time.perf_counter()
        finish = self.learner.finish_step_async()
        # From here the learner may be past the last logged step, a failed gather included
        # (ranks that took their rows apply the update even when another refused a batch).
        self.unlogged_update = True  # until run._step logs the step
        while len(self.in_flight) < ahead and self._same_stage(step, step + 1 + len(self.in_flight)):
            self.in_flight.append(self.launch(step + 1 + len(self.in_flight)))  # overlaps the update
        learner_metrics = self.learner.gather(finish)
        t_learn = time.perf_counter() - t_learn0
        try:
            sync = self.broadcast()
        except WorkersExhausted as exc:
            # The step is trained: let it be logged and checkpointed, then stop (run._step).
            self.deferred_failure, sync = exc, {}
        self.step = step
        self._cursor_after = self.in_flight[0].cursor if self.in_flight else self.sampler.state_dict()
        now = time.perf_counter()
        # An async step's rollout started during the step before, so timing_s/step overlaps
        # its neighbours; the interval between step ends is what a step costs the run.
        interval = now - (self._last_step_done or rollout.started)
        self._last_step_done = now
        return {**tally.metrics(self.topology.sink), **learner_metrics, **sync, **rollout.faults,
                "faults/worker_restarts_total": self.pool.restarts,
                "faults/learner_restarts_total": self.learner_restarts,
                "timing_s/rollout": t_rollout, "timing_s/learn_tail": t_learn,
                "timing_s/step": now - rollout.started, "timing_s/step_interval": interval}

    def _same_stage(self, step: int, later: int) -> bool:
        """May step ``later``'s rollout start now? Not past the run's end, and not across a
        growth step (its rollouts need the grown graph)."""
        growth = (g.at_step for g in self.cfg.trainer.growth)
        return later <= self.cfg.trainer.steps and not any(step < g <= later for g in growth)

    def evaluate(self) -> dict[str, float]:
        """Held-out accuracy, greedy with its 95% interval and (``trainer.eval_samples``)
        sampled. The step-0 pass is saved under eval/ so the final report can pair with it."""
        from neuromas_dist.analysis.evaluation import evaluate_pass
        from neuromas_dist.analysis.report import accuracies
        from neuromas_dist.analysis.run_eval import BEFORE, save_pass, step_pass_name

        t0 = time.perf_counter()
        # Sampled passes cost several greedy ones: only before and after, where the report pairs them.
        samples = self.cfg.trainer.eval_samples if self.step in (0, self.cfg.trainer.steps) else 0
        passes = self.on_workers("held-out evaluation",
                                 lambda: evaluate_pass(self.workers, self.data.eval, self.step, samples))
        acc = accuracies(passes, self.topology.sink, [str(e.id) for e in self.data.eval])
        greedy = acc["greedy"]
        out = {"eval/accuracy": greedy["mean"], "eval/accuracy_ci_lo": greedy["ci_lo"],
               "eval/accuracy_ci_hi": greedy["ci_hi"], "eval/questions": greedy["n"]}
        if "sampled" in acc:
            out["eval/sampled_accuracy"] = acc["sampled"]["mean"]
        if self.step == 0:
            save_pass(self.run_dir, BEFORE, passes, self.topology.names)
        save_pass(self.run_dir, step_pass_name(self.step), passes, self.topology.names)
        self.last_eval = (self.step, passes)
        return {**out, "timing_s/eval": time.perf_counter() - t0}

    def report(self) -> dict[str, Any]:
        """The final evaluation report (eval/): the last held-out pass, node ablations."""
        from neuromas_dist.analysis.run_eval import evaluate_on

        step, full = self.last_eval if self.last_eval and self.last_eval[0] == self.step else (self.step, None)
        adapters = self.learner.adapters()
        return self.on_workers("the final report", lambda: evaluate_on(
            self.workers, adapters, self.data.eval, self.run_dir, self.topology, step, self.cfg.trainer.eval_samples,
            ablate=self.cfg.trainer.final_ablation, full=full, answer_type=self.data.task.answer_type))

    def on_workers(self, what: str, call: Callable[[], Any]) -> Any:
        """``call`` over all workers (an evaluation pass); restart the workers that failed and
        call again until it succeeds or the restart budget is spent (WorkersExhausted)."""
        from ray.exceptions import RayError

        self.pool.heal(f"{what}: replaced since the last broadcast", failed=False)
        while True:
            try:
                return call()
            except RayError as exc:
                self.pool.heal(f"{what}: {short_error(exc)}")

    # ------------------------------------------------------------ checkpoints and outputs

    def checkpoint(self) -> Path:
        from ray.exceptions import RayActorError

        t0 = time.perf_counter()
        path = self.run_dir / "checkpoints" / f"step_{self.step:06d}"
        cursor = self._cursor_after or self.sampler.state_dict()
        gate = self.gate.to_dict() if self.gate else None
        try:
            self.learner.save_checkpoint(path, extra={"step": self.step, "sampler": cursor,
                                                      "widths": list(self.widths), "gate": gate})
        except RayActorError as exc:
            raise LearnerLost(f"a learner rank died while checkpointing step {self.step}") from exc
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        self.checkpoint_costs.append({"seconds": time.perf_counter() - t0, "bytes": size})
        return path

    def save_adapters(self, name: str = "adapters") -> dict[str, Path]:
        return write_adapter_set(self.run_dir / name, self.learner.adapters())

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            try:
                ray.get(w.shutdown.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - a dead worker has nothing left to close
                pass
        if self.learner is not None:
            self.learner.shutdown()
        self.placement.remove()


def map_adapters(small: AdapterSet, small_topo: Topology, large: Topology) -> tuple[AdapterSet, str]:
    """The larger topology's adapters from the smaller one's, by the graph's growth
    mapping: carried-over nodes get their trained adapter, new nodes none (they keep
    their zero-contribution init). Returns the set and a one-line description."""
    mapping = growth_mapping(small_topo, large)
    grown = AdapterSet(small.version, {new: small.tensors[old] for new, old in mapping.items() if old},
                       small.peft_config)
    return grown, "; ".join(describe_growth(mapping).splitlines())


def adapters_from_run(small_run: Path, large: Topology) -> tuple[AdapterSet, Topology, str]:
    """:func:`map_adapters` from a finished run's ``adapters/`` (PEFT layout); also returns
    the small run's topology."""
    small = read_adapter_set(Path(small_run) / "adapters", version=0)
    small_topo = Topology.build(_widths_of(small.tensors))
    grown, how = map_adapters(small, small_topo, large)
    return grown, small_topo, how


def check_grow_from(cfg: Config, model_dir: str) -> None:
    """Raise IncompatibleAdapters unless ``trainer.grow_from``'s adapters fit this run's
    base model and LoRA config (checked on the meta device, before anything starts)."""
    from neuromas_dist.rollout.adapters import check_adapter_shapes, lora_shapes

    small = read_adapter_set(Path(cfg.trainer.grow_from) / "adapters", version=0)
    shapes, _ = lora_shapes(model_dir, cfg.lora, trust_remote_code=cfg.model.trust_remote_code)
    check_adapter_shapes(small, shapes, f"trainer.grow_from={cfg.trainer.grow_from}")


def _widths_of(nodes: Any) -> tuple[int, ...]:
    """Layer widths from node names L<layer>N<index> (a run's saved adapters)."""
    from neuromas_dist.graph.topology import parse_node_name

    layers: dict[int, int] = {}
    for name in nodes:
        layer, index = parse_node_name(name)
        layers[layer] = max(layers.get(layer, 0), index + 1)
    return tuple(layers[i] for i in range(len(layers)))


def lost_object(exc: BaseException) -> bool:
    """Did a task fail because an object it needed was lost? A rollout node can die after
    its batch's summary reached the driver but before a learner rank fetched the piece
    (the driver does not copy rows). The step cannot be completed from the rows that
    remain, so it is treated like a lost rank: back to the last checkpoint and replay."""
    from ray.exceptions import ObjectLostError

    return isinstance(exc, ObjectLostError) or isinstance(getattr(exc, "cause", None), ObjectLostError)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((Path(run_dir) / "checkpoints").glob("step_*"))
    return found[-1] if found else None
