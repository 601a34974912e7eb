"""Held-out evaluation on rollout workers: each step's pass during training, the final
report (the full graph and each node ablated), and a finished run evaluated afresh
(``python -m neuromas_dist.evaluate``). What the passes and the report hold on disk is
``analysis/run_eval.py``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import ray

from neuromas_dist.adapters.peft_io import AdapterSet, read_adapter_set
from neuromas_dist.analysis.evaluation import EvalPass, ablation_passes, evaluate_pass
from neuromas_dist.analysis.report import accuracies
from neuromas_dist.analysis.run_eval import (
    BEFORE,
    RunShape,
    describe,
    local_config,
    run_topology,
    save_pass,
    step_of_pass,
    step_pass_name,
    write_eval_dir,
)
from neuromas_dist.config import Config
from neuromas_dist.driver.cluster import init_ray
from neuromas_dist.driver.metrics import read_metrics
from neuromas_dist.driver.rollouts import WorkerPool
from neuromas_dist.graph.topology import Topology
from neuromas_dist.rollout.actors import broadcast_adapters, start_workers
from neuromas_dist.rollout.worker import resolve_model_dir
from neuromas_dist.tasks.base import Example
from neuromas_dist.tasks.data import TaskData, load_task_data


class HeldOut:
    """The held-out split of a training run: a pass at chosen steps, saved under eval/, and
    the final report paired with the step-0 pass."""

    def __init__(self, cfg: Config, run_dir: Path, data: TaskData):
        self.cfg, self.run_dir, self.data = cfg, run_dir, data
        self.last: tuple[int, EvalPass] | None = None  # the latest pass, which the report reuses at its step

    def evaluate(self, pool: WorkerPool, topology: RunShape, step: int) -> dict[str, float]:
        """Held-out accuracy, greedy with its 95% interval and (``trainer.eval_samples``)
        sampled. The step-0 pass is saved as "before" so the final report can pair with it."""
        t0 = time.perf_counter()
        # Sampled passes cost several greedy ones: only before and after, where the report pairs them.
        samples = self.cfg.trainer.eval_samples if step in (0, self.cfg.trainer.steps) else 0
        passes = pool.call_healing("held-out evaluation",
                                   lambda workers: evaluate_pass(workers, self.data.eval, step, samples))
        acc = accuracies(passes, topology.sink, [str(e.id) for e in self.data.eval])
        greedy = acc["greedy"]
        out = {"eval/accuracy": greedy["mean"], "eval/accuracy_ci_lo": greedy["ci_lo"],
               "eval/accuracy_ci_hi": greedy["ci_hi"], "eval/questions": greedy["n"]}
        if "sampled" in acc:
            out["eval/sampled_accuracy"] = acc["sampled"]["mean"]
        if step == 0:
            save_pass(self.run_dir, BEFORE, passes, topology.names)
        save_pass(self.run_dir, step_pass_name(step), passes, topology.names)
        self.last = (step, passes)
        return {**out, "timing_s/eval": time.perf_counter() - t0}

    def report(self, pool: WorkerPool, adapters: AdapterSet, topology: RunShape, step: int) -> dict[str, Any]:
        """The final report (eval/): the step's held-out pass (reused when it ran), node ablations."""
        full = self.last[1] if self.last and self.last[0] == step else None
        return pool.call_healing("the final report", lambda workers: evaluate_on(
            workers, adapters, self.data.eval, self.run_dir, topology, step, self.cfg.trainer.eval_samples,
            ablate=self.cfg.trainer.final_ablation, full=full, answer_type=self.data.task.answer_type))

    def forget_after(self, step: int) -> None:
        """Delete the passes of steps after ``step`` (they will be redone)."""
        for path in (self.run_dir / "eval" / "trajectories").glob("step_*"):
            if step_of_pass(path.name) > step:
                path.unlink()


def evaluate_on(workers: Sequence[Any], adapters: AdapterSet, examples: Sequence[Example], run_dir: Path,
                topology: RunShape, step: int, samples: int, ablate: bool, full: EvalPass | None = None,
                answer_type: str = "number", eval_dir: Path | None = None) -> dict[str, Any]:
    """Full pass (unless given), ablations, report. The workers must hold ``adapters``."""
    full = full or evaluate_pass(workers, examples, step, samples)
    ablations = ablation_passes(workers, examples, adapters, step) if ablate else {}
    metrics_path = Path(run_dir) / "metrics.jsonl"
    metrics = read_metrics(metrics_path) if metrics_path.is_file() else []
    return write_eval_dir(run_dir, full, ablations, examples, topology.sink, topology.names, step, metrics,
                          answer_type, eval_dir)


class Prepared(NamedTuple):
    cfg: Config  # the run's config, made to run here (one worker, local unless RAY_ADDRESS)
    data: TaskData
    adapters: AdapterSet  # read from RUN_DIR/adapters
    topology: RunShape  # the graph the adapters belong to


def prepare(cfg: Config, run_dir: Path) -> Prepared:
    """Everything an evaluation needs that can be wrong, checked before Ray starts.
    Raises ValueError (DataError, TopologyError) or FileNotFoundError with one line."""
    data = load_task_data(cfg.data)
    # Version 1: above the worker's own placeholder adapters, so the load takes.
    adapters = read_adapter_set(Path(run_dir) / "adapters", version=1)
    topology = run_topology(cfg, run_dir)
    if set(adapters.tensors) != set(topology.names):
        raise ValueError(f"{run_dir}/adapters holds {', '.join(sorted(adapters.tensors))} but the run's "
                         f"{describe(topology)} has {', '.join(topology.names)}")
    return Prepared(local_config(cfg), data, adapters, topology)


def evaluate_run_dir(prepared: Prepared, run_dir: Path, samples: int, ablate: bool,
                     eval_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate a finished run's ``adapters/`` on one fresh rollout worker; the report goes
    to ``eval_dir`` (RUN_DIR/eval by default)."""
    cfg, data, adapters, topology = prepared
    init_ray(cfg)
    workers = start_workers(cfg, model_dir=resolve_model_dir(cfg), task=data.task)
    try:
        if isinstance(topology, Topology):
            ray.get([w.set_topology.remote(topology.widths, topology.to_dict()["edges"]) for w in workers])
        broadcast_adapters(workers, adapters)
        return evaluate_on(workers, adapters, data.eval, run_dir, topology, _run_step(run_dir), samples, ablate,
                           answer_type=data.task.answer_type, eval_dir=eval_dir)
    finally:
        for w in workers:
            ray.get(w.shutdown.remote())


def _run_step(run_dir: Path) -> int:
    summary = Path(run_dir) / "summary.json"
    return int(json.loads(summary.read_text()).get("steps", -1)) if summary.is_file() else -1
