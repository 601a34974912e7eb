"""Held-out evaluation on rollout workers: each step's pass during training, the final
report (the full graph and each node ablated), and a finished run evaluated afresh
(``python -m neuromas_dist.evaluate``). What the passes and the report hold on disk is
``analysis/run_eval.py``; reading a finished run is ``run_dir``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import ray

from neuromas_dist.analysis.evaluation import EvalPass
from neuromas_dist.analysis.report import accuracies
from neuromas_dist.analysis.run_eval import (
    BEFORE,
    RunShape,
    save_pass,
    step_of_pass,
    step_pass_name,
    write_eval_dir,
)
from neuromas_dist.config import Config
from neuromas_dist.driver.cluster import init_ray
from neuromas_dist.driver.rollouts import WorkerPool
from neuromas_dist.graph.topology import Topology
from neuromas_dist.rollout.actors import split_examples
from neuromas_dist.rollout.warm_pool import take_workers
from neuromas_dist.rollout.worker import resolve_model_dir
from neuromas_dist.run_dir import read_metrics
from neuromas_dist.run_dir.finished import FinishedRun
from neuromas_dist.tasks.data import TaskData


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

    def report(self, pool: WorkerPool, topology: RunShape, step: int) -> dict[str, Any]:
        """The final report (eval/): the step's held-out pass (reused when it ran), node ablations."""
        full = self.last[1] if self.last and self.last[0] == step else None
        return pool.call_healing("the final report", lambda workers: evaluate_on(
            workers, self.data.eval, self.run_dir, topology, step, self.cfg.trainer.eval_samples,
            ablate=self.cfg.trainer.final_ablation, full=full, answer_type=self.data.task.answer_type))

    def forget_after(self, step: int) -> None:
        """Delete the passes of steps after ``step`` (they will be redone)."""
        for path in (self.run_dir / "eval" / "trajectories").glob("step_*"):
            if step_of_pass(path.name) > step:
                path.unlink()


def evaluate_pass(workers: Sequence[Any], examples: Sequence[Any], step: int, samples: int,
                  ablate: str | None = None) -> EvalPass:
    """Greedy (and ``samples`` sampled) passes over ``examples``, shared across workers;
    ``ablate``: that node runs as the base model in this pass only (the workers' adapters
    never change, so a pass after an ablation is the full graph's by construction)."""
    shares = [(w, s) for w, s in zip(workers, split_examples(examples, len(workers))) if s]
    results = ray.get([w.evaluate.remote(share, step, samples, ablate) for w, share in shares])
    greedy = pa.concat_tables([r["greedy"] for r in results if r["greedy"] is not None])
    sampled = [r["sampled"] for r in results if r.get("sampled") is not None]
    return EvalPass(greedy, pa.concat_tables(sampled) if sampled else None)


def ablation_passes(workers: Sequence[Any], examples: Sequence[Any], nodes: Sequence[str], step: int
                    ) -> dict[str, pa.Table]:
    """Greedy pass with each node ablated in turn (its LoRA left out: the node runs as the base model)."""
    return {node: evaluate_pass(workers, examples, step, 0, ablate=node).greedy for node in sorted(nodes)}


def evaluate_on(workers: Sequence[Any], examples: Sequence[Any], run_dir: Path, topology: RunShape, step: int,
                samples: int, ablate: bool, full: EvalPass | None = None, answer_type: str = "number",
                eval_dir: Path | None = None) -> dict[str, Any]:
    """Full pass (unless given), ablations, report, on the adapters the workers hold."""
    full = full or evaluate_pass(workers, examples, step, samples)
    ablations = ablation_passes(workers, examples, topology.names, step) if ablate else {}
    return write_eval_dir(run_dir, full, ablations, examples, topology.sink, topology.names, step,
                          read_metrics(Path(run_dir) / "metrics.jsonl"), answer_type, eval_dir)


def evaluate_run_dir(run: FinishedRun, data: TaskData, samples: int, ablate: bool,
                     eval_dir: Path | None = None) -> dict[str, Any]:
    """Evaluate a finished run's adapters on one fresh rollout worker; the report goes to
    ``eval_dir`` (RUN_DIR/eval by default)."""
    init_ray(run.cfg)
    pool = WorkerPool(run.cfg, take_workers(run.cfg, resolve_model_dir(run.cfg), data.task),
                      lambda line: print(f"[evaluate] {line}", flush=True), task=data.task)
    try:
        if isinstance(run.topology, Topology):
            pool.set_topology(run.topology.widths, run.topology.to_dict()["edges"], None)
        pool.load_adapters(run.adapters)
        return pool.call_healing("evaluation", lambda workers: evaluate_on(
            workers, data.eval, run.path, run.topology, run.step, samples, ablate,
            answer_type=data.task.answer_type, eval_dir=eval_dir))
    finally:
        pool.shutdown()
