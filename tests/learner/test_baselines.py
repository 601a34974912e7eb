"""The streaming baseline bookkeeping (learner.baselines) against numbers worked out by hand."""

from __future__ import annotations

from collections import defaultdict

import pytest

from neuromas_dist.learner.baselines import known_baseline, needs_step_constant, pop_complete_groups, step_constants
from neuromas_dist.learner.rows import Row


def row(q: str, k: int, node: str, reward: float) -> Row:
    return Row(node, q, k, [1], [2], [-1.0], 0, reward)


def test_a_group_is_released_once_all_its_samples_are_in_with_leave_one_out_advantages():
    pending = defaultdict(list)
    pending[("q0", "A")] += [row("q0", 0, "A", 1.0), row("q0", 1, "A", 0.0)]
    pending[("q0", "B")] += [row("q0", 0, "B", 1.0)]  # sample 1 of node B is not here yet
    [(node, rows)] = pop_complete_groups(pending, n_samples=2)
    # b_0 = r_1 = 0, b_1 = r_0 = 1: advantages 1 and -1
    assert node == "A" and [r.adv_known for r in rows] == [1.0, -1.0]
    assert set(pending) == {("q0", "B")}
    # the step's end: whatever is there; a lone sample has no peer, advantage 0
    assert [(n, [r.adv_known for r in rs]) for n, rs in pop_complete_groups(pending, 2, force=True)] == [("B", [0.0])]
    assert not pending


def test_leave_one_out_by_hand_for_three_samples():
    pending = {("q", "A"): [row("q", k, "A", r) for k, r in enumerate((1.0, 0.0, 0.0))]}
    [(node, rows)] = pop_complete_groups(pending, 3)
    # b = (sum - r) / 2: (0, 0.5, 0.5) -> A = (1, -0.5, -0.5)
    assert node == "A" and [r.adv_known for r in rows] == [1.0, -0.5, -0.5]


@pytest.mark.parametrize("baseline,ema,need,known", [
    ("loo", {}, False, 0.0),
    ("batch_mean", {"A": 0.3}, True, 0.0),
    ("ema", {}, True, 0.0),          # first seen: waits for the step's mean
    ("ema", {"A": 0.25}, False, 0.25),
])
def test_which_baselines_wait_for_the_step(baseline, ema, need, known):
    assert needs_step_constant(baseline, ema, "A") is need
    assert known_baseline(baseline, ema, "A") == known


def test_step_constants_are_the_node_means_where_needed():
    # A: 4 samples (6 calls); the mean is over samples, each counted once
    totals = {"A": {"samples": 4.0, "sample_reward_sum": 3.0}, "B": {"samples": 2.0, "sample_reward_sum": 1.0},
              "C": {"samples": 0.0, "sample_reward_sum": 0.0}}
    assert step_constants(totals, "batch_mean", {}) == {"A": 0.75, "B": 0.5, "C": 0.0}
    assert step_constants(totals, "ema", {"A": 0.1}) == {"A": 0.0, "B": 0.5, "C": 0.0}
    assert step_constants(totals, "loo", {}) == {"A": 0.0, "B": 0.0, "C": 0.0}


def test_std_scales_a_group_by_one_over_its_reward_std():
    # rewards (1, 0, 0): mean 1/3, unbiased std sqrt(1/3) = 0.57735; s = 1 / (0.57735 + 1e-6)
    s = 1.0 / ((1.0 / 3.0) ** 0.5 + 1e-6)
    pending = {("q", "A"): [row("q", k, "A", r) for k, r in enumerate((1.0, 0.0, 0.0))]}
    [(_, rows)] = pop_complete_groups(pending, 3, advantage_norm="std")
    assert [r.scale for r in rows] == pytest.approx([s] * 3, rel=1e-12)
    assert [r.adv_known for r in rows] == pytest.approx([1.0 * s, -0.5 * s, -0.5 * s], rel=1e-12)
    # no spread: advantage 0 (not 0 / eps)
    pending = {("q", "A"): [row("q", k, "A", 1.0) for k in range(3)]}
    [(_, rows)] = pop_complete_groups(pending, 3, advantage_norm="std")
    assert [r.adv_known for r in rows] == [0.0, 0.0, 0.0] and rows[0].scale == pytest.approx(1.0e6)
