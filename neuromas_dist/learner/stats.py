"""A step's per-node statistics: summed on each rank as rows go through, all-reduced once,
then checked (logprob gap) and turned into the step's metrics."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.distributed as dist

# Per-node statistics summed over ranks; their order fixes the all-reduce layout.
NODE_STATS = ("rows", "reward_sum", "samples", "sample_reward_sum", "adv_known_sum", "scale_sum", "tokens",
              "onpolicy_tokens", "gap_sum", "kl_sum", "stale_tokens", "iw_sum", "loss_known", "loss_one", "denom",
              "input_tokens", "stale_checked_tokens", "stale_gap_sum", "ratio_sum", "corrected_tokens", "entropy_sum",
              "kl_base_sum", "clipped_tokens", "update_tokens", "update_loss", "update_denom")
NODE_MAX = ("ratio_max",)  # reduced with MAX over ranks
UPDATE_STATS = ("clipped_tokens", "update_tokens", "update_loss", "update_denom")  # one ppo_clip update's

Totals = Mapping[str, Mapping[str, float]]


class LogprobGapError(RuntimeError):
    """The learner's logprobs of the rollout's sampled tokens disagree with the rollout's."""


def empty(nodes: Sequence[str]) -> dict[str, dict[str, float]]:
    return {n: dict.fromkeys(NODE_STATS + NODE_MAX, 0.0) for n in nodes}


def all_reduce(stats: Totals, nodes: Sequence[str], bad: bool, device: torch.device, world_size: int
               ) -> tuple[dict[str, dict[str, float]], bool]:
    """Sum every rank's statistics, the maxima by MAX (and whether any rank saw a
    non-finite gradient)."""
    out: dict[str, dict[str, float]] = {n: {} for n in nodes}
    for keys, op, extra in ((NODE_STATS, "sum", [float(bad)]), (NODE_MAX, "max", [])):
        buf = torch.tensor([stats[n][k] for n in nodes for k in keys] + extra, dtype=torch.float64, device=device)
        if world_size > 1:
            dist.all_reduce(buf, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        vals = buf.tolist()
        for i, n in enumerate(nodes):
            out[n].update(zip(keys, vals[i * len(keys):(i + 1) * len(keys)]))
        bad = bad if op == "max" else vals[-1] > 0
    return out, bad


def add_updates(totals: Mapping[str, dict[str, float]], update: Totals) -> None:
    """Add one ppo_clip update's statistics to the step's (``StepSums.count_update``'s keys)."""
    for node, s in update.items():
        for k in UPDATE_STATS:
            totals[node][k] += s[k]


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
    rows, on, tokens = s["rows"], s["onpolicy_tokens"], max(s["tokens"], 1.0)
    m = {f"node/{node}/advantage_mean": (s["adv_known_sum"] - c * s["scale_sum"]) / rows,
         f"node/{node}/reward_mean": s["reward_sum"] / rows,
         f"node/{node}/logprob_gap": s["gap_sum"] / on if on else float("nan"),
         f"node/{node}/kl": s["kl_sum"] / on if on else float("nan"),
         f"node/{node}/stale_token_frac": s["stale_tokens"] / tokens,
         f"node/{node}/ratio_mean": s["ratio_sum"] / tokens,
         f"node/{node}/ratio_max": s["ratio_max"],
         f"node/{node}/corrected_token_frac": s["corrected_tokens"] / tokens}
    if s["entropy_sum"]:  # computed only when the loss holds it or learner.log_entropy asks
        # exact, over the vocabulary; the rollout's node/*/entropy estimates it from the samples
        m[f"node/{node}/entropy_exact"] = s["entropy_sum"] / tokens
    if s["kl_base_sum"]:
        m[f"node/{node}/kl_base"] = s["kl_base_sum"] / tokens
    if s["update_tokens"]:
        m[f"node/{node}/clip_frac"] = s["clipped_tokens"] / s["update_tokens"]
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
    if any(s["update_denom"] for s in totals.values()):  # ppo_clip: the updates' loss
        loss = sum(s["update_loss"] for s in totals.values())
        denom = sum(s["update_denom"] for s in totals.values())
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
