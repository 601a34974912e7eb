"""Confidence intervals for accuracies: percentile bootstrap over questions (pure numpy).

Questions, not samples, are the unit that is resampled: the samples of one question are
correlated (same question, same difficulty), so resampling them as if independent would
give intervals that are too narrow. A comparison of two arms (before/after, with and
without a node) is *paired*: both are scored on the same questions, and the bootstrap
resamples question indices once for both, so question difficulty cancels.

Across training seeds (:func:`seeds_ci`) the interval must also cover seed-to-seed
variation (which node specialises, how fast): each bootstrap draw resamples seeds *and*
questions, the same question draw for every seed and for both arms of a paired
difference. With 3 seeds the seed resampling is coarse; the per-seed numbers are
reported beside it so a reader sees the spread directly.
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


def _seed_matrix(scores) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"seed scores must be a non-empty [seeds, questions] array, got shape {arr.shape}")
    return arr


def seeds_ci(scores, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Estimate:
    """Mean of [seeds, questions] scores with a bootstrap over seeds and questions (n = seeds x questions)."""
    arr = _seed_matrix(scores)
    rng = np.random.default_rng(seed)
    s_idx = rng.integers(0, arr.shape[0], size=(n_boot, arr.shape[0]))
    q_idx = rng.integers(0, arr.shape[1], size=(n_boot, arr.shape[1]))
    boot = np.array([arr[np.ix_(s, q)].mean() for s, q in zip(s_idx, q_idx)])
    lo, hi = _interval(boot, level)
    return Estimate(float(arr.mean()), lo, hi, int(arr.size))


def paired_seeds_diff_ci(a, b, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Estimate:
    """Mean of a - b for two arms scored on the same questions with the same seeds."""
    a, b = _seed_matrix(a), _seed_matrix(b)
    if a.shape != b.shape:
        raise ValueError(f"paired arms need the same seeds and questions: {a.shape} vs {b.shape}")
    return seeds_ci(a - b, n_boot, level, seed)
