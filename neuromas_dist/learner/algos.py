"""Joint REINFORCE as small pure functions on tensors.

The objective of one training step over all nodes, samples and response tokens:

    loss = - sum_{rows r, tokens t} c_r * w_{r,t} * A_r * log pi_node(r)(y_{r,t}) / D

* ``A_r = R_r - b_r``: the sample's terminal reward minus the baseline of the row's node.
* ``w_{r,t}``: truncated importance weight, 1 for on-policy rows (see
  :func:`importance_weights`), detached.
* ``c_r, D``: normalisation. ``token``: c_r = 1 and D = number of response tokens in
  the step, so every token counts the same; ``sequence``: c_r = 1 / T_r and D = number of
  rows, so every node call counts the same whatever its length.

Baselines are per node: each node has its own reward statistics (nodes see different
subsets of samples once rows can be missing, and a grown node starts a fresh EMA).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch


# ----------------------------------------------------------------- baselines

def ema_update(state: Mapping[str, float], node_means: Mapping[str, float], decay: float) -> dict[str, float]:
    """New EMA state after one step's per-node mean rewards; a node seen first starts at its mean."""
    new = dict(state)
    for node, mean in node_means.items():
        old = state.get(node)
        new[node] = float(mean) if old is None else decay * old + (1.0 - decay) * float(mean)
    return new


def batch_mean_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """Every row of a node gets the mean reward of that node's rows in the step."""
    return rewards.float().mean().expand(rewards.shape)


def loo_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """Leave-one-out over the n samples of one question (one node): b_i = (sum - r_i) / (n - 1).

    With a single sample there is no other sample to compare with, so b = r (advantage 0):
    one lone sample carries no information about how good it was relative to its peers.
    """
    r = rewards.float()
    n = r.numel()
    if n < 2:
        return r.clone()
    return (r.sum() - r) / (n - 1)


def advantages(rewards: torch.Tensor, baselines: torch.Tensor) -> torch.Tensor:
    return rewards.float() - baselines.float()


# ----------------------------------------------------------------- logprobs

def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0,
                   top_p: float = 1.0) -> torch.Tensor:
    """log pi(tokens) under the sampling policy: [B, T, V], [B, T] -> [B, T].

    vLLM records "processed" logprobs (after temperature and top-p), so the learner
    applies the same transforms or the gap check compares two different distributions.
    Temperature <= 0 (greedy) has no sampling distribution; it is scored at 1.
    """
    t = temperature if temperature > 0 else 1.0
    scaled = logits.float() / t
    idx = tokens.long().unsqueeze(-1)
    if top_p < 1.0:
        # The rollout sampled the token, so it was inside vLLM's nucleus; the learner's own
        # nucleus (other kernels, other rounding) can just miss it, and one -inf would skip
        # the whole step. Score over nucleus + the sampled token: the plain nucleus rule
        # whenever the token is inside it, finite (and close) when it is at the edge.
        scaled = top_p_filter(scaled, top_p).scatter(-1, idx, scaled.gather(-1, idx))
    logp = torch.log_softmax(scaled, dim=-1)
    return logp.gather(-1, idx).squeeze(-1)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """-inf outside the nucleus, vLLM's rule: sort ascending, drop tokens whose cumulative
    probability is <= 1 - top_p, always keep the most likely one."""
    sorted_logits, order = logits.sort(dim=-1)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cum <= 1.0 - top_p
    drop[..., -1] = False
    mask = torch.zeros_like(drop).scatter(-1, order, drop)
    return logits.masked_fill(mask, float("-inf"))


def importance_weights(lp_current: torch.Tensor, lp_behaviour: torch.Tensor, stale: torch.Tensor,
                       cap: float) -> torch.Tensor:
    """Per-token truncated ratio min(exp(lp_cur - lp_beh), cap) on stale rows, 1 elsewhere; detached.

    ``stale`` is [B] (row sampled by an older adapter version). cap <= 0 turns weighting off.
    Truncation bounds the variance a very unlikely stale token could add (as in IMPALA/V-trace).
    """
    ones = torch.ones_like(lp_current, dtype=torch.float32)
    if cap <= 0:
        return ones
    ratio = torch.exp(lp_current.detach().float() - lp_behaviour.float()).clamp(max=cap)
    return torch.where(stale.bool().unsqueeze(-1), ratio, ones)


# ----------------------------------------------------------------- loss

def token_coefficients(mask: torch.Tensor, norm: str) -> torch.Tensor:
    """c_r per token ([B, T]): 1 for token norm, 1/T_r for sequence norm; 0 on padding."""
    m = mask.float()
    if norm == "token":
        return m
    if norm == "sequence":
        return m / m.sum(-1, keepdim=True).clamp(min=1.0)
    raise ValueError(f"loss_norm must be 'token' or 'sequence', got {norm!r}")


def loss_denominator(mask: torch.Tensor, norm: str) -> float:
    """D for a batch: response tokens (token norm) or rows with at least one token (sequence)."""
    m = mask.float()
    return float(m.sum()) if norm == "token" else float((m.sum(-1) > 0).sum())


def reinforce_terms(lp: torch.Tensor, adv: torch.Tensor, weights: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """Un-normalised loss sum: -sum c * w * A * lp. Split from the denominator so ranks can sum first."""
    return -(coef * weights * adv.float().unsqueeze(-1) * lp).sum()


def reinforce_loss(lp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, norm: str = "token",
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """The normalised loss of one self-contained batch (all rows of the step)."""
    w = torch.ones_like(lp) if weights is None else weights
    denom = loss_denominator(mask, norm)
    return reinforce_terms(lp, adv, w, token_coefficients(mask, norm)) / max(denom, 1.0)


# ----------------------------------------------------------------- rollout agreement

def logprob_gap(lp_learner: torch.Tensor, lp_rollout: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, int]:
    """(sum |lp_l - lp_r|, sum k3-KL, token count) over masked tokens; sums so ranks can add them.

    k3 = exp(d) - 1 - d with d = lp_l - lp_r estimates KL(rollout || learner) from the
    rollout's own samples; it is >= 0 per token and low-variance (Schulman's k3).
    """
    m = mask.bool()
    d = (lp_learner.detach().float() - lp_rollout.float())[m]
    if d.numel() == 0:
        return 0.0, 0.0, 0
    k3 = torch.exp(d) - 1.0 - d
    return float(d.abs().sum()), float(k3.sum()), int(d.numel())


def is_finite(x: float) -> bool:
    return math.isfinite(x)
