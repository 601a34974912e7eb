"""The table's figure: accuracy with its 95% interval per row, and the training curves of
the trained graphs on one step axis (a grown arm's steps start after its small run's)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")  # headless: clusters and CI have no display
import matplotlib.pyplot as plt
import numpy as np


def plot_table(result: Mapping[str, Any], path: Path) -> Path:
    fig, (bars, curve) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [1.3, 1]})
    _bars(bars, result["rows"])
    _curves(curve, result["curves"], result["spec"]["small_steps"])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# One colour per arm in both panels: (what the row or curve key contains, colour, legend
# label), the most specific first: curves are named by run ("neuromas7_grown_gated"), rows
# by arm ("grown_gated_start").
ARMS = (("via5", "C9", "NeuroMAS-7 grown via 5"), ("neuromas5", "C8", "NeuroMAS-5 grown"),
        ("grown_gated", "C2", "NeuroMAS-7 grown, gated"), ("grown_carry", "C4", "NeuroMAS-7 grown, carry"),
        ("neuromas7", "C3", "NeuroMAS-7 from scratch"), ("neuromas3", "C0", "NeuroMAS-3"),
        ("single", "C1", "single LLM"), ("base", "C7", "base model"))


def _arm(key: str) -> tuple[str, str]:
    """(colour, legend label) of a row or curve key."""
    for part, color, label in ARMS:
        if part in key:
            return color, label
    return "C5", key


def _bars(ax, rows: Mapping[str, Any]) -> None:
    keys = list(rows)
    shown: dict[str, Any] = {}
    for i, key in enumerate(keys):
        a = rows[key]["accuracy"]
        color, label = _arm(key)
        bar = ax.bar(i, a["mean"], yerr=[[a["mean"] - a["ci_lo"]], [a["ci_hi"] - a["mean"]]], capsize=3, color=color)
        shown.setdefault(label, bar)
        for p in rows[key]["per_seed"]:
            ax.plot(i, p["mean"], "k.", ms=3)
    ax.set_xticks(range(len(keys)), [rows[k]["label"] for k in keys], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("accuracy, 95% CI over seeds and questions (dots: seeds)", fontsize=9)
    ax.legend(shown.values(), shown.keys(), fontsize=6, loc="upper left")
    ax.grid(axis="y", alpha=0.3)


def _curves(ax, curves: Mapping[str, list[dict[str, Any]]], small_steps: int) -> None:
    for arm, points in curves.items():
        reward, acc = defaultdict(list), defaultdict(list)
        for p in points:
            if p["reward"] is not None:
                reward[p["step"]].append(p["reward"])
            if p["accuracy"] is not None:
                acc[p["step"]].append(p["accuracy"])
        color, label = _arm(arm)
        steps = sorted(reward)
        ax.plot(steps, [np.mean(reward[s]) for s in steps], color=color, alpha=0.6, lw=1,
                label=f"{label}: training reward")
        steps = sorted(acc)
        ax.plot(steps, [np.mean(acc[s]) for s in steps], "o--", color=color, ms=4, label=f"{label}: held-out")
    ax.axvline(small_steps, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("training steps in total (grown arms: after the small run's)")
    ax.set_ylabel("accuracy (mean over seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, loc="lower right")
    ax.grid(alpha=0.3)
