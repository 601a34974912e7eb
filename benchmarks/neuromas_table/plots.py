"""The table's figure: accuracy with its 95% interval per row, and the training curves of
the trained graphs on one step axis (a grown arm's steps start after its small run's)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_table(result: Mapping[str, Any], path: Path) -> Path:
    fig, (bars, curve) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1.3, 1]})
    _bars(bars, result["rows"])
    _curves(curve, result["curves"], result["spec"]["small_steps"])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(ax, rows: Mapping[str, Any]) -> None:
    keys = list(rows)
    for i, key in enumerate(keys):
        a = rows[key]["accuracy"]
        ax.bar(i, a["mean"], yerr=[[a["mean"] - a["ci_lo"]], [a["ci_hi"] - a["mean"]]], capsize=3,
               color=_color(key))
        for p in rows[key]["per_seed"]:
            ax.plot(i, p["mean"], "k.", ms=3)
    ax.set_xticks(range(len(keys)), [rows[k]["label"] for k in keys], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("accuracy, 95% CI over seeds and questions (dots: seeds)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def _color(key: str) -> str:
    for prefix, color in (("base", "C7"), ("single", "C1"), ("neuromas3", "C0"), ("neuromas7", "C3"),
                          ("grown_gated", "C2"), ("grown_carry", "C4"), ("neuromas5", "C8"), ("grown_via5", "C9")):
        if key.startswith(prefix):
            return color
    return "C5"


def _curves(ax, curves: Mapping[str, list[dict[str, Any]]], small_steps: int) -> None:
    for i, (arm, points) in enumerate(curves.items()):
        reward, acc = defaultdict(list), defaultdict(list)
        for p in points:
            if p["reward"] is not None:
                reward[p["step"]].append(p["reward"])
            if p["accuracy"] is not None:
                acc[p["step"]].append(p["accuracy"])
        steps = sorted(reward)
        ax.plot(steps, [np.mean(reward[s]) for s in steps], color=f"C{i}", alpha=0.6, lw=1,
                label=f"{arm}: training reward")
        steps = sorted(acc)
        ax.plot(steps, [np.mean(acc[s]) for s in steps], "o--", color=f"C{i}", ms=4, label=f"{arm}: held-out")
    ax.axvline(small_steps, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training steps in total (grown arms: after the small run's)")
    ax.set_ylabel("accuracy (mean over seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, loc="lower right")
    ax.grid(alpha=0.3)
