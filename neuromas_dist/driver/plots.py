"""PNG plots of a run from its metrics.jsonl: reward and accuracy, and one panel per node."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt

from neuromas_dist.run_dir import read_metrics


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_run(run_dir: Path) -> list[Path]:
    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    out = Path(run_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    return [_plot_overview(rows, out / "reward_accuracy.png"), _plot_nodes(rows, out / "nodes.png")]


def _plot_overview(rows: list[dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("rollout/reward_mean", "train reward (sampled)"),
                       ("eval/accuracy", "held-out accuracy (greedy)"),
                       ("eval/sampled_accuracy", "held-out accuracy (sampled)")):
        xs, ys = _series(rows, key)
        if xs:
            ax.plot(xs, ys, marker="o" if key.startswith("eval") else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("fraction correct")  # autoscaled: a few points of change must stay visible
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_nodes(rows: list[dict], path: Path) -> Path:
    """One panel per metric that tells nodes apart; the reward (shared by all nodes of
    a sample) is in reward_accuracy.png instead."""
    keys = sorted({k for r in rows for k in r if k.startswith("node/")})
    nodes = sorted({k.split("/")[1] for k in keys})
    carried = sorted({k.split("/")[2] for k in keys if k.split("/")[2].startswith("carries_")})
    panels = [("entropy", ["entropy"]), ("response tokens", ["response_len_mean"]),
              ("logprob gap", ["logprob_gap"])] + [(c.replace("_", " "), [c]) for c in carried]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 1.9 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, metrics) in zip(axes[:, 0], panels):
        for i, node in enumerate(nodes):
            for metric in metrics:
                xs, ys = _series(rows, f"node/{node}/{metric}")
                if xs:
                    ax.plot(xs, ys, label=node, color=f"C{i}")
        ax.set_ylabel(title, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / len(panels)))
    if nodes:  # one legend for every panel: a node keeps its colour throughout
        handles = [plt.Line2D([], [], color=f"C{i}") for i in range(len(nodes))]
        fig.legend(handles, nodes, loc="upper center", ncol=min(len(nodes), 8), fontsize=8, frameon=False)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
