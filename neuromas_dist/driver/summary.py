"""``summary.json`` (held-out accuracy before and after, the gain and its interval, faults,
checkpoint costs) and the lines the run prints about it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence


def write_summary(run_dir: Path, update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into RUN_DIR/summary.json; returns the whole summary."""
    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary.update(update)
    path.write_text(json.dumps(summary, indent=2))
    return summary


def eval_summary(metrics: Mapping[str, Any], when: str) -> dict[str, float]:
    out = {f"eval_accuracy_{when}": metrics["eval/accuracy"]}
    if "eval/sampled_accuracy" in metrics:
        out[f"eval_sampled_accuracy_{when}"] = metrics["eval/sampled_accuracy"]
    return out


def gain_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """Paired before/after gain of greedy accuracy with its 95% interval, when known."""
    gain = report.get("gain", {}).get("greedy")
    if gain is None:
        return {}
    return {"eval_accuracy_gain": gain["mean"], "eval_accuracy_gain_ci": [gain["ci_lo"], gain["ci_hi"]],
            "eval_accuracy_ci_after": [report["accuracy"]["greedy"]["ci_lo"], report["accuracy"]["greedy"]["ci_hi"]],
            "eval_accuracy_ci_before": [report["before"]["greedy"]["ci_lo"], report["before"]["greedy"]["ci_hi"]]}


def fault_summary(faults: Mapping[str, int], checkpoint_costs: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Restarts over the run, and what a checkpoint costs (the final one included)."""
    costs = checkpoint_costs
    return {**faults, "checkpoints": len(costs),
            "checkpoint_seconds_mean": sum(c["seconds"] for c in costs) / len(costs) if costs else None,
            "checkpoint_bytes": costs[-1]["bytes"] if costs else None}


def eval_line(metrics: Mapping[str, Any]) -> str:
    line = f"accuracy {metrics['eval/accuracy']:.3f} (greedy)"
    if "eval/sampled_accuracy" in metrics:
        line += f", {metrics['eval/sampled_accuracy']:.3f} (sampled)"
    return line + f" on {metrics['eval/questions']} questions"


def done_line(steps: int, final: Mapping[str, Any], summary: Mapping[str, Any], run_dir: Path) -> str:
    gain = summary.get("eval_accuracy_gain")
    ci = summary.get("eval_accuracy_gain_ci") or [0.0, 0.0]
    return (f"done after {steps} steps: held-out {eval_line(final)} "
            f"(before: accuracy {summary.get('eval_accuracy_before', float('nan')):.3f}"
            + (f"; gain {gain:+.3f}, 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]" if gain is not None else "")
            + f"); report {run_dir / 'eval' / 'report.md'}")
