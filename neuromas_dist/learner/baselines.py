"""Per-node baselines while a step's rows stream in, as pure functions.

* ``loo``: a (question, node) group's advantages are known once all n samples of that
  node's rows for the question are in; until then its rows wait.
* ``ema`` with state: b is the node's EMA, known at once.
* ``batch_mean``, and ``ema`` for a node seen for the first time: b = c_node, the node's
  mean reward over the whole step, known only when the step ends. The step's gradient is
  linear in it: ``sum_r (R_r - b_r - c) g_r = G_known - c * G_one``, so a rank sums both
  while streaming and combines them once c is known; streaming never waits for rewards.
"""

from __future__ import annotations

from typing import Mapping, MutableMapping

import torch

from neuromas_dist.learner import algos
from neuromas_dist.learner.rows import Row


def uses_ema_state(baseline: str, ema: Mapping[str, float], node: str) -> bool:
    return baseline == "ema" and node in ema


def known_baseline(baseline: str, ema: Mapping[str, float], node: str) -> float:
    """The part of b known while streaming (leave-one-out is set per group instead)."""
    return float(ema[node]) if uses_ema_state(baseline, ema, node) else 0.0


def needs_step_constant(baseline: str, ema: Mapping[str, float], node: str) -> bool:
    return baseline != "loo" and not uses_ema_state(baseline, ema, node)


def pop_complete_groups(pending: MutableMapping[tuple[str, str], list[Row]], n_samples: int,
                        force: bool = False, advantage_norm: str = "none") -> list[tuple[str, list[Row]]]:
    """Remove the (question, node) groups holding all ``n_samples`` samples (every group
    with ``force``, at the step's end) and set each row's advantage against its
    leave-one-out baseline, times GRPO's 1 / std of the group's rewards under
    ``advantage_norm=std`` (``Row.scale``). Returns (node, rows) per group. Keyed by
    (question, node): a sample's rows may arrive in different batches, and a node's
    baseline needs that node's rows of all n samples. The baseline leaves out a *sample*,
    not a row: every call a sample made of the node gets that sample's advantage."""
    out = []
    for key in list(pending):
        rows = pending[key]
        samples = {r.sample_index: r.reward for r in rows}
        if not force and len(samples) < n_samples:
            continue
        del pending[key]
        rewards = torch.tensor(list(samples.values()), dtype=torch.float64)
        adv = dict(zip(samples, algos.advantages(rewards, algos.loo_baseline(rewards)).tolist()))
        scale = algos.std_scale(rewards) if advantage_norm == "std" else 1.0
        for r in rows:
            r.adv_known = adv[r.sample_index] * scale  # x 1.0 is exact: the default's numbers stay
            r.scale = scale
        out.append((key[1], rows))
    return out


def node_mean_rewards(totals: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Each node's mean reward over the step's samples that called it: a sample counts once
    however many calls of the node it made (a graph node's rows are its samples)."""
    return {node: s["sample_reward_sum"] / s["samples"] for node, s in totals.items() if s["samples"] > 0}


def step_constants(totals: Mapping[str, Mapping[str, float]], baseline: str, ema: Mapping[str, float]
                   ) -> dict[str, float]:
    """c_node from the step's summed statistics: the node's mean reward where its baseline
    waited for the step's end, else 0."""
    means = node_mean_rewards(totals)
    return {node: means.get(node, 0.0) if needs_step_constant(baseline, ema, node) else 0.0 for node in totals}
