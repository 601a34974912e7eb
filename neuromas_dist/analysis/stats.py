"""Confidence intervals for accuracies: percentile bootstrap over questions (pure numpy).

Questions, not samples, are the unit that is resampled: the samples of one question are
correlated (same question, same difficulty), so resampling them as if independent would
give intervals that are too narrow. A comparison of two arms (before/after, with and
without a node) is *paired*: both are scored on the same questions, and the bootstrap
resamples question indices once for both, so question difficulty cancels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


class Estimate(NamedTuple):
    mean: float
    lo: float  # lower end of the LEVEL interval
    hi: float  # upper end
    n: int  # questions

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "ci_lo": self.lo, "ci_hi": self.hi, "n": self.n}


def per_question(scores: Sequence[Sequence[float]] | Sequence[float]) -> np.ndarray:
    """[Q] or [Q, S] scores -> [Q] per-question means (a question's samples averaged)."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr.mean(axis=1)
    if arr.ndim != 1:
        raise ValueError(f"scores must be [questions] or [questions, samples], got shape {arr.shape}")
    return arr


def _resampled_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(values), size=(n_boot, len(values)))
    return values[index].mean(axis=1)


def _interval(boot: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1.0 - tail], method="inverted_cdf")
    return float(lo), float(hi)


def bootstrap_ci(scores, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Estimate:
    """Mean accuracy and its percentile-bootstrap interval, resampling questions."""
    values = per_question(scores)
    if len(values) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    lo, hi = _interval(_resampled_means(values, n_boot, seed), level)
    return Estimate(float(values.mean()), lo, hi, len(values))


def paired_diff_ci(after, before, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Estimate:
    """Mean of (after - before) over the same questions, with a paired bootstrap interval."""
    a, b = per_question(after), per_question(before)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same questions: {a.shape} vs {b.shape}")
    return bootstrap_ci(a - b, n_boot, level, seed)
