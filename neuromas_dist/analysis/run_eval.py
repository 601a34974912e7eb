"""A run's ``eval/`` directory: the passes behind the report, the report, the plots.

Files only: ``driver/evaluation.py`` runs the passes (a training run's workers, or a
fresh worker on a finished run's adapters) and hands them here.

    eval/trajectories/before_{greedy,sampled}.parquet   step-0 held-out passes (saved by training),
    eval/trajectories/before_nodes.json                 and the nodes of the graph they ran
    eval/trajectories/step_<N>_{greedy,sampled,nodes}   every held-out pass of training, by step
    eval/trajectories/final_{greedy,sampled}.parquet    the trained graph
    eval/trajectories/ablate_<node>_greedy.parquet      the trained graph with <node> zeroed
    eval/report.json, eval/report.md, eval/*.png
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from neuromas_dist.analysis.evaluation import EvalPass, load_table, save_table
from neuromas_dist.analysis.plots import plot_report
from neuromas_dist.analysis.report import build_report, write_report
from neuromas_dist.config import Config
from neuromas_dist.graph.topology import Topology
from neuromas_dist.programs.entry import ProgramShape

BEFORE, FINAL = "before", "final"


def step_pass_name(step: int) -> str:
    """Name of the held-out pass evaluated at ``step`` during training (``step_000015``)."""
    return f"step_{step:06d}"


def step_of_pass(filename: str) -> int:
    """The step of a saved training-time pass (``step_000015_greedy.parquet`` -> 15)."""
    return int(filename.split("_")[1])


def _tables_dir(run_dir: Path, eval_dir: Path | None = None) -> Path:
    return Path(eval_dir or Path(run_dir) / "eval") / "trajectories"


def save_pass(run_dir: Path, name: str, p: EvalPass, nodes: Sequence[str], eval_dir: Path | None = None) -> None:
    """Save a pass and the graph it ran on (a grown run's step-0 graph is not its last)."""
    tables = _tables_dir(run_dir, eval_dir)
    save_table(p.greedy, tables / f"{name}_greedy.parquet")
    save_table(p.sampled, tables / f"{name}_sampled.parquet")
    (tables / f"{name}_nodes.json").write_text(json.dumps(sorted(nodes)))


def load_pass(run_dir: Path, name: str) -> tuple[EvalPass, list[str]] | None:
    greedy = load_table(_tables_dir(run_dir) / f"{name}_greedy.parquet")
    meta = _tables_dir(run_dir) / f"{name}_nodes.json"
    if greedy is None or not meta.is_file():
        return None
    return EvalPass(greedy, load_table(_tables_dir(run_dir) / f"{name}_sampled.parquet")), json.loads(meta.read_text())


def _comparable(before: tuple[EvalPass, list[str]] | None, full: EvalPass, nodes: Sequence[str]) -> EvalPass | None:
    """The step-0 pass, if it ran the same graph on the same questions (else no paired gain)."""
    if before is None or before[1] != sorted(nodes):
        return None
    passes = before[0]
    if set(passes.greedy["question_id"].to_pylist()) != set(full.greedy["question_id"].to_pylist()):
        return None
    if full.sampled is None or passes.sampled is None or passes.sampled.num_rows != full.sampled.num_rows:
        passes = EvalPass(passes.greedy, None)
    return passes


def write_eval_dir(run_dir: Path, full: EvalPass, ablations: Mapping[str, pa.Table], examples: Sequence[Any],
                   sink: str, nodes: Sequence[str], step: int, metrics: Sequence[Mapping[str, Any]] = (),
                   answer_type: str = "number", eval_dir: Path | None = None) -> dict[str, Any]:
    """Save the passes, build the report (paired with the step-0 pass when there is one),
    write report.json / report.md and the plots into ``eval_dir`` (RUN_DIR/eval by
    default); returns the report. ``metrics``: the run's metrics.jsonl rows (the report's curves)."""
    run_dir = Path(run_dir)
    eval_dir = Path(eval_dir or run_dir / "eval")
    tables = _tables_dir(run_dir, eval_dir)
    for stale in [*tables.glob(f"{FINAL}_*"), *tables.glob("ablate_*")]:
        stale.unlink()  # a report never sits next to passes of an earlier evaluation
    save_pass(run_dir, FINAL, full, nodes, eval_dir)
    for node, table in ablations.items():
        save_table(table, tables / f"ablate_{node}_greedy.parquet")
    report = build_report(full, ablations, _comparable(load_pass(run_dir, BEFORE), full, nodes),
                          [str(e.id) for e in examples], sink, nodes, step, list(metrics), answer_type)
    write_report(report, eval_dir, title=str(run_dir))
    plot_report(report, eval_dir)
    return report


RunShape = Topology | ProgramShape  # what a run trains: a graph, or a program's agents


def run_shape(cfg: Config, widths: tuple[int, ...]) -> RunShape:
    """The program's agents, or the graph of ``widths`` (with the config's edges when they
    are the configured widths: a grown graph is fully connected)."""
    if cfg.program.entry:
        return ProgramShape(cfg.program.agents)
    edges = list(cfg.topology.edges) if tuple(widths) == tuple(cfg.topology.widths) else []
    return Topology.of_config(widths, edges)


def describe(shape: RunShape) -> str:
    """``graph [2, 1]`` or ``program with agents solver, verifier``, for messages."""
    if isinstance(shape, ProgramShape):
        return f"program with agents {', '.join(shape.agents)}"
    return f"graph {list(shape.widths)}"
