"""PNG plots of an evaluation report: ablation bars, what each node carries, accuracy
over training with its confidence band."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt


def _err(e: Mapping[str, float]) -> tuple[list[float], list[float]]:
    return [e["mean"] - e["ci_lo"]], [e["ci_hi"] - e["mean"]]


def plot_ablation(report: Mapping[str, Any], path: Path) -> Path:
    """Greedy accuracy of the full graph and with each node's adapter zeroed."""
    bars = [("full graph", report["accuracy"]["greedy"])]
    bars += [(f"{node} zeroed", a["greedy"]) for node, a in report["ablation"].items()]
    if "before" in report:
        bars.append(("step 0", report["before"]["greedy"]))
    fig, ax = plt.subplots(figsize=(1.2 * len(bars) + 2, 3.5))
    for i, (_, e) in enumerate(bars):
        lo, hi = _err(e)
        ax.bar(i, e["mean"], yerr=[lo, hi], capsize=4, color="C0" if i == 0 else "C1")
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_title("node ablation, 95% CI", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_carries(report: Mapping[str, Any], path: Path) -> Path:
    """Per node: fraction of its greedy texts carrying each sub-result / the answer."""
    nodes = list(report["node_text"])
    kinds = sorted({k for t in report["node_text"].values() for k in t["carries"]})
    fig, ax = plt.subplots(figsize=(1.5 * len(nodes) + 2, 3.5))
    width = 0.8 / max(1, len(kinds))
    for j, kind in enumerate(kinds):
        xs = [i + j * width for i in range(len(nodes))]
        ax.bar(xs, [report["node_text"][n]["carries"].get(kind, 0.0) for n in nodes], width, label=kind)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(nodes))], nodes)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of texts (right value)")
    ax.set_title("what each node's text carries", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_training(report: Mapping[str, Any], path: Path) -> Path:
    """Held-out greedy accuracy at each evaluated step with its 95% band."""
    curve = report["training"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [c["step"] for c in curve]
    ax.plot(steps, [c["accuracy"] for c in curve], marker="o", label="greedy")
    banded = [c for c in curve if c.get("ci_lo") is not None]
    if banded:
        ax.fill_between([c["step"] for c in banded], [c["ci_lo"] for c in banded],
                        [c["ci_hi"] for c in banded], alpha=0.25, label="95% CI")
    sampled = [c for c in curve if c.get("sampled_accuracy") is not None]
    if sampled:
        ax.plot([c["step"] for c in sampled], [c["sampled_accuracy"] for c in sampled], marker="s",
                label="sampled")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_report(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_ablation(report, out_dir / "ablation.png"), plot_carries(report, out_dir / "node_carries.png")]
    if report["training"]:
        paths.append(plot_training(report, out_dir / "accuracy_over_training.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
