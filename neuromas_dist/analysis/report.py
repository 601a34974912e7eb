"""The evaluation report of a run: ``report.json`` (stable keys) and ``report.md``.

Keys of report.json (every accuracy is ``{"mean", "ci_lo", "ci_hi", "n"}``: mean over
``n`` questions and a 95% percentile-bootstrap interval resampling questions):

- ``questions``, ``samples_per_question``, ``sink``, ``nodes``, ``step``
- ``accuracy.greedy``, ``accuracy.sampled``: the trained graph
- ``before.greedy`` / ``before.sampled`` and ``gain.greedy`` / ``gain.sampled``: the
  step-0 graph and the paired difference after - before (same questions), when the run
  saved its step-0 evaluation
- ``ablation.<node>.greedy``: accuracy with that node's adapter zeroed, and
  ``ablation.<node>.drop``: paired difference full - ablated (how much the node's
  training contributes)
- ``node_text.<node>``: ``response_len_mean``, ``carries.<kind>`` / ``states.<kind>``
  (fraction of the node's greedy texts stating sub-result ``kind`` with the right
  value / at all; ``answer`` is the final answer), ``top_patterns`` ([shape, fraction])
- ``training``: held-out greedy accuracy and its interval at each evaluated step
  (from metrics.jsonl)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from neuromas_dist.analysis.evaluation import EvalPass, sink_scores
from neuromas_dist.analysis.stats import bootstrap_ci, paired_diff_ci
from neuromas_dist.tasks import node_text


def accuracies(p: EvalPass, sink: str, qids: Sequence[str]) -> dict[str, Any]:
    """Greedy (and, if the pass has them, sampled) accuracy with its 95% interval."""
    out = {"greedy": bootstrap_ci(sink_scores(p.greedy, sink, qids)).as_dict()}
    if p.sampled is not None:
        out["sampled"] = bootstrap_ci(sink_scores(p.sampled, sink, qids)).as_dict()
    return out


def _gain(after: EvalPass, before: EvalPass, sink: str, qids: Sequence[str]) -> dict[str, Any]:
    out = {"greedy": paired_diff_ci(sink_scores(after.greedy, sink, qids),
                                    sink_scores(before.greedy, sink, qids)).as_dict()}
    if after.sampled is not None and before.sampled is not None:
        out["sampled"] = paired_diff_ci(sink_scores(after.sampled, sink, qids),
                                        sink_scores(before.sampled, sink, qids)).as_dict()
    return out


def node_text_summary(table: pa.Table, node: str, answer_type: str = "number") -> dict[str, Any]:
    """What one node wrote across a pass: length, carried sub-results, frequent shapes."""
    return node_text.summarize_node(table.filter(pc.equal(table["node"], node)).select(
        ["text", "question", "gold_answer", "response_ids"]).to_pylist(), answer_type=answer_type)


def training_curve(metrics: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{"step": r["step"], "accuracy": r["eval/accuracy"],
             "ci_lo": r.get("eval/accuracy_ci_lo"), "ci_hi": r.get("eval/accuracy_ci_hi"),
             "sampled_accuracy": r.get("eval/sampled_accuracy")}
            for r in metrics if "eval/accuracy" in r]


def build_report(full: EvalPass, ablations: Mapping[str, pa.Table], before: EvalPass | None,
                 question_ids: Sequence[str], sink: str, nodes: Sequence[str], step: int,
                 metrics: Sequence[Mapping[str, Any]] = (), answer_type: str = "number") -> dict[str, Any]:
    # samples, not rows: a program's sample may hold any number of rows
    count = lambda t: len(set(t["sample_id"].to_pylist()))  # noqa: E731
    samples = 0 if full.sampled is None else count(full.sampled) // max(1, count(full.greedy))
    report: dict[str, Any] = {
        "step": step, "sink": sink, "nodes": list(nodes), "questions": len(question_ids),
        "samples_per_question": samples,
        "accuracy": accuracies(full, sink, question_ids),
    }
    if before is not None:
        report["before"] = accuracies(before, sink, question_ids)
        report["gain"] = _gain(full, before, sink, question_ids)
    full_greedy = sink_scores(full.greedy, sink, question_ids)
    report["ablation"] = {
        node: {"greedy": bootstrap_ci(sink_scores(t, sink, question_ids)).as_dict(),
               "drop": paired_diff_ci(full_greedy, sink_scores(t, sink, question_ids)).as_dict()}
        for node, t in ablations.items()}
    report["node_text"] = {node: node_text_summary(full.greedy, node, answer_type) for node in nodes}
    report["training"] = training_curve(metrics)
    return report


def _fmt(e: Mapping[str, Any]) -> str:
    return f"{e['mean']:.3f} [{e['ci_lo']:.3f}, {e['ci_hi']:.3f}]"


def render_markdown(report: Mapping[str, Any], title: str) -> str:
    """A short page a person reads first: accuracy, gain, ablation, what nodes write."""
    lines = [f"# Evaluation: {title}", "",
             f"Step {report['step']}; {report['questions']} held-out questions; "
             f"95% bootstrap intervals over questions in brackets.", "",
             "| | greedy | sampled |", "|---|---|---|"]
    for label, key in (("trained graph", "accuracy"), ("step 0", "before"), ("gain (paired)", "gain")):
        if key in report:
            sampled = report[key].get("sampled")
            lines.append(f"| {label} | {_fmt(report[key]['greedy'])} | {_fmt(sampled) if sampled else '-'} |")
    lines += ["", "## Node ablation (adapter zeroed, greedy)", "",
              "| node | accuracy | drop vs full graph |", "|---|---|---|"]
    for node, a in report["ablation"].items():
        lines.append(f"| {node} | {_fmt(a['greedy'])} | {_fmt(a['drop'])} |")
    lines += ["", "## What each node writes (greedy)", "",
              "| node | tokens | " + " | ".join(f"carries {k}" for k in _kinds(report)) + " | most frequent shape |",
              "|---|---|" + "---|" * len(_kinds(report)) + "---|"]
    for node, t in report["node_text"].items():
        top = t["top_patterns"][0] if t["top_patterns"] else ["", 0.0]
        cells = " | ".join(f"{t['carries'].get(k, 0.0):.2f}" for k in _kinds(report))
        lines.append(f"| {node} | {t['response_len_mean']:.1f} | {cells} | `{top[0]}` ({top[1]:.0%}) |")
    return "\n".join(lines) + "\n"


def _kinds(report: Mapping[str, Any]) -> list[str]:
    return sorted({k for t in report["node_text"].values() for k in t["carries"]})


def write_report(report: Mapping[str, Any], out_dir: Path, title: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_markdown(report, title))
    return [out_dir / "report.json", out_dir / "report.md"]
