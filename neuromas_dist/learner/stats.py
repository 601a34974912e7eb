"""A step's per-node statistics: summed on each rank as rows go through, all-reduced once,
then checked (logprob gap) and turned into the step's metrics."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.distributed as dist

# Per-node statistics summed over ranks; their order fixes the all-reduce layout.
NODE_STATS = ("rows", "reward_sum", "samples", "sample_reward_sum", "adv_known_sum", "tokens", "onpolicy_tokens", "gap_sum", "kl_sum",
              "stale_tokens", "iw_sum", "loss_known", "loss_one", "denom", "input_tokens",
              "stale_checked_tokens", "stale_gap_sum")

Totals = Mapping[str, Mapping[str, float]]


class LogprobGapError(RuntimeError):
    """The learner's logprobs of the rollout's sampled tokens disagree with the rollout's."""


def empty(nodes: Sequence[str]) -> dict[str, dict[str, float]]:
    return {n: dict.fromkeys(NODE_STATS, 0.0) for n in nodes}


def all_reduce(stats: Totals, nodes: Sequence[str], bad: bool, device: torch.device, world_size: int
               ) -> tuple[dict[str, dict[str, float]], bool]:
    """Sum every rank's statistics (and whether any rank saw a non-finite gradient)."""
    flat = [stats[n][k] for n in nodes for k in NODE_STATS] + [float(bad)]
    buf = torch.tensor(flat, dtype=torch.float64, device=device)
    if world_size > 1:
        dist.all_reduce(buf)
    vals = buf.tolist()
    k = len(NODE_STATS)
    return {n: dict(zip(NODE_STATS, vals[i * k:(i + 1) * k])) for i, n in enumerate(nodes)}, vals[-1] > 0


def all_reduce_max(value: float, device: torch.device, world_size: int) -> float:
    buf = torch.tensor([value], dtype=torch.float64, device=device)
    if world_size > 1:
        dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return float(buf)


def check_gap(totals: Totals, bound: float, version: int) -> None:
    """Raise LogprobGapError naming every node whose mean |learner - rollout| logprob
    exceeds ``bound``, on its on-policy tokens or its re-scored stale ones."""
    bad = []
    for node, s in totals.items():
        for kind, gap_sum, tokens in (("on-policy", s["gap_sum"], s["onpolicy_tokens"]),
                                      ("stale, re-scored under their own version", s["stale_gap_sum"],
                                       s["stale_checked_tokens"])):
            gap = gap_sum / tokens if tokens > 0 else 0.0
            if tokens > 0 and math.isfinite(gap) and gap > bound:
                bad.append(f"{node} (mean |learner - rollout| = {gap:.4f} over {int(tokens)} {kind} tokens)")
    if bad:
        raise LogprobGapError(
            f"logprob gap above learner.max_logprob_gap={bound} at adapter version {version} "
            f"for node(s): {'; '.join(bad)}. Rollout and learner disagree: wrong adapter, a silent "
            f"fall-back to the base model, or a temperature/dtype mismatch.")


def all_finite(totals: Totals, consts: Mapping[str, float]) -> bool:
    return (all(math.isfinite(v) for s in totals.values() for v in s.values())
            and all(math.isfinite(c) for c in consts.values()))


def node_metrics(node: str, s: Mapping[str, float], c: float, ema: float | None) -> dict[str, float]:
    rows, on = s["rows"], s["onpolicy_tokens"]
    m = {f"node/{node}/advantage_mean": (s["adv_known_sum"] - c * rows) / rows,
         f"node/{node}/reward_mean": s["reward_sum"] / rows,
         f"node/{node}/logprob_gap": s["gap_sum"] / on if on else float("nan"),
         f"node/{node}/kl": s["kl_sum"] / on if on else float("nan"),
         f"node/{node}/stale_token_frac": s["stale_tokens"] / max(s["tokens"], 1.0)}
    if s["stale_checked_tokens"]:
        m[f"node/{node}/logprob_gap_stale"] = s["stale_gap_sum"] / s["stale_checked_tokens"]
    if s["stale_tokens"]:
        m[f"node/{node}/importance_weight_mean"] = s["iw_sum"] / s["stale_tokens"]
    if ema is not None:
        m[f"node/{node}/baseline_ema"] = ema
    return m


def step_metrics(totals: Totals, consts: Mapping[str, float], ema: Mapping[str, float] | None,
                 grad_norm: float, busy: float, skipped: int, version: int) -> dict[str, float]:
    """The step's row of metrics. ``ema``: the EMA baselines (None unless baseline=ema)."""
    m: dict[str, float] = {}
    for node, s in totals.items():
        if s["rows"]:
            m.update(node_metrics(node, s, consts[node], None if ema is None else ema.get(node)))
    loss = sum(s["loss_known"] - consts[n] * s["loss_one"] for n, s in totals.items())
    denom = sum(s["denom"] for s in totals.values())
    tokens = sum(s["input_tokens"] for s in totals.values())
    m.update({
        "learner/loss": loss / max(denom, 1.0),
        "learner/grad_norm": grad_norm,
        "learner/tokens": tokens,
        "learner/tokens_per_s": tokens / busy if busy > 0 else 0.0,
        "learner/skipped_steps": float(skipped),
        "learner/version": float(version + 1),
        "timing_s/learn": busy,
    })
    return m
