"""Percentile-bootstrap intervals over questions (neuromas_dist.analysis.stats), checked
against intervals worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neuromas_dist.analysis.stats import Estimate, bootstrap_ci, paired_diff_ci, per_question


def test_two_questions_interval_spans_both_values():
    """[0, 1]: a resample of two draws has mean 0, 0.5 or 1 with probability 1/4, 1/2,
    1/4, so the 2.5% quantile is 0 and the 97.5% quantile is 1."""
    est = bootstrap_ci([0, 1])
    assert est == Estimate(0.5, 0.0, 1.0, 2)


def test_binomial_interval_matches_hand_computation():
    """[0, 0, 0, 1]: the interval is (0, 0.75), not (0, 1)."""
    # A resample of 4 questions holds k copies of the 1, k ~ Binomial(4, 1/4), and its
    # mean is k/4. By hand: P(k=0) = (3/4)^4 = 0.316 >= 0.025, so the lower end is 0;
    # P(k<=2) = 0.316 + 0.422 + 0.211 = 0.949 < 0.975 and P(k<=3) = 1 - 1/256 = 0.996
    # >= 0.975, so the upper end is 3/4. With 20000 resamples the empirical P(k<=2)
    # has a standard error of ~0.0016, far from the 0.975 cut.
    est = bootstrap_ci([0, 0, 0, 1], n_boot=20000)
    assert est == Estimate(0.25, 0.0, 0.75, 4)


def test_constant_scores_give_a_degenerate_interval():
    """Every resample of a constant vector has the same mean: lo == mean == hi."""
    est = bootstrap_ci([0.375] * 7)
    assert est == Estimate(0.375, 0.375, 0.375, 7)


def test_samples_of_a_question_are_averaged_first():
    """[[1, 0], [1, 1]] is two questions with means 0.5 and 1.0: mean 0.75, n = 2, and
    the resampled means are 0.5, 0.75, 1.0, so the interval is (0.5, 1.0)."""
    np.testing.assert_array_equal(per_question([[1, 0], [1, 1]]), [0.5, 1.0])
    est = bootstrap_ci([[1, 0], [1, 1]])
    assert est == Estimate(0.75, 0.5, 1.0, 2)


def test_per_question_rejects_three_dimensions():
    """A [Q, S, T] array is neither per-question nor per-sample scores."""
    with pytest.raises(ValueError):
        per_question(np.zeros((2, 2, 2)))


def test_paired_identical_arms_give_zero():
    """after == before: every paired difference is 0, so mean, lo and hi are all 0."""
    scores = [[1, 0, 1], [0, 0, 0], [1, 1, 1]]
    assert paired_diff_ci(scores, scores) == Estimate(0.0, 0.0, 0.0, 3)


def test_paired_constant_improvement_is_exact():
    """after = before + 1 on every question: the difference is 1 on every resample."""
    before = [0.0, 0.5, 2.0, -1.0]
    after = [b + 1 for b in before]
    assert paired_diff_ci(after, before) == Estimate(1.0, 1.0, 1.0, 4)


def test_paired_needs_the_same_questions():
    """Arms scored on different numbers of questions cannot be paired."""
    with pytest.raises(ValueError):
        paired_diff_ci([1, 0, 1], [1, 0])
    with pytest.raises(ValueError):
        paired_diff_ci([[1, 0], [1, 1]], [1, 0, 1])


def test_pairing_cancels_question_difficulty():
    """Each question gains exactly one of four samples (+0.25) while per-question
    accuracy ranges from 0 to 0.75: the paired interval is exactly (0.25, 0.25), but
    the two arms' own intervals are wide enough to overlap."""
    before_correct = [0, 3, 0, 3, 1, 2, 0, 3]  # correct samples out of 4, per question
    before = [[1] * k + [0] * (4 - k) for k in before_correct]
    after = [[1] * (k + 1) + [0] * (3 - k) for k in before_correct]
    # Multiples of 1/4 are exact in binary, so every difference is exactly 0.25.
    assert paired_diff_ci(after, before) == Estimate(0.25, 0.25, 0.25, 8)
    b, a = bootstrap_ci(before), bootstrap_ci(after)
    assert b.mean == 12 / 32 and a.mean == 20 / 32
    assert a.lo < b.hi  # unpaired, the gain is not even clearly separated
    assert b.hi - b.lo > 0.25 and a.hi - a.lo > 0.25


def test_same_seed_same_interval():
    """The resampling is seeded: the same seed reproduces the interval exactly."""
    scores = [0.1, 0.9, 0.4, 0.7, 0.3, 0.0, 1.0]
    assert bootstrap_ci(scores, seed=3) == bootstrap_ci(scores, seed=3)
    assert paired_diff_ci(scores, scores[::-1], seed=5) == paired_diff_ci(scores, scores[::-1], seed=5)


def test_empty_input_is_nan_with_zero_questions():
    """No questions: n = 0 and the mean and both ends are NaN (no exception)."""
    est = bootstrap_ci([])
    assert est.n == 0
    assert math.isnan(est.mean) and math.isnan(est.lo) and math.isnan(est.hi)


def test_as_dict_keys():
    """as_dict uses the ci_lo / ci_hi names."""
    assert bootstrap_ci([0, 1]).as_dict() == {"mean": 0.5, "ci_lo": 0.0, "ci_hi": 1.0, "n": 2}


# ---------------------------------------------------------------- over seeds and questions

from neuromas_dist.analysis.stats import paired_seeds_diff_ci, seeds_ci  # noqa: E402


def test_seeds_ci_of_identical_seeds_is_the_question_spread():
    est = seeds_ci([[1, 1, 1, 1], [1, 1, 1, 1]])
    assert est == Estimate(1.0, 1.0, 1.0, 8)
    est = seeds_ci([[0, 1], [0, 1]])  # like bootstrap_ci([0, 1]): a 2-question resample spans 0..1
    assert (est.mean, est.lo, est.hi) == (0.5, 0.0, 1.0)


def test_seed_to_seed_variation_widens_the_interval():
    """Two seeds, one that learned (all right) and one that did not (all wrong): questions
    alone show no spread inside a seed, so the whole interval comes from resampling seeds:
    a resample of 2 seeds is both-good, mixed or both-bad with probability 1/4, 1/2, 1/4."""
    est = seeds_ci([[1.0] * 50, [0.0] * 50], n_boot=4000)
    assert est.mean == 0.5 and est.lo == 0.0 and est.hi == 1.0


def test_paired_seeds_difference_cancels_shared_difficulty():
    rng = np.random.default_rng(0)
    hard = rng.random((3, 400)) < 0.5  # which questions a seed gets right
    a = hard.astype(float)
    b = a.copy()
    b[:, :40] = 0.0  # b loses exactly the first 40 questions a got right
    diff = paired_seeds_diff_ci(a, b)
    assert diff.mean == pytest.approx(a[:, :40].sum() / a.size)
    assert diff.lo >= 0.0  # never negative: b is never better on any question
    with pytest.raises(ValueError, match="same seeds and questions"):
        paired_seeds_diff_ci(a, b[:2])
    with pytest.raises(ValueError, match=r"\[seeds, questions\]"):
        seeds_ci([1.0, 0.0])
