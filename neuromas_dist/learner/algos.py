"""The learner's objectives as small pure functions on tensors.

The objective of one training step over all nodes, samples and response tokens:

    loss = sum_{rows r, tokens t} c_r * ( - w_{r,t} * surrogate_{r,t}
                                          + kl_coef * KL_{r,t} - entropy_coef * H_{r,t} ) / D

* ``surrogate``: ``A_r * log pi(y_t)`` for ``reinforce`` (the paper's); for ``ppo_clip``
  ``min(rho A_r, clip(rho, 1 - clip_low, 1 + clip_high) A_r)`` with ``rho`` the ratio to
  the step's starting policy (its gradient at rho = 1 is REINFORCE's).
* ``A_r = (R_r - b_r) * s_r``: the sample's terminal reward minus the baseline of the
  row's node, times 1 or (``advantage_norm=std``) one over the std of the question's
  sample rewards.
* ``w_{r,t}``: detached weights from the ratio pi_learner / pi_rollout, taken once:
  truncated on stale rows, and on every row under a
  ``rollout_correction`` (:func:`correction_weights`).
* ``c_r, D``: normalisation. ``token``: c_r = 1 and D = number of response tokens in
  the step, so every token counts the same; ``sequence``: c_r = 1 / T_r and D = number of
  rows, so every node call counts the same whatever its length; ``constant`` (Dr.GRPO):
  c_r = 1 and D = rows x the generation budget, so no length bias enters through D.
* ``KL``: an estimator of KL(pi || pi_base) from the row's own tokens, pi_base the node's
  adapter disabled; ``H``: the entropy of the sampling distribution at each position.

Baselines are per node: each node has its own reward statistics (nodes see different
subsets of samples once rows can be missing, and a grown node starts a fresh EMA).
"""

from __future__ import annotations

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


STD_EPS = 1e-6  # verl's; TRL adds 1e-4


def std_scale(rewards: torch.Tensor, eps: float = STD_EPS) -> float:
    """GRPO's 1 / (std + eps) over one question's sample rewards (unbiased std, as verl and
    TRL take it). A lone sample has no spread to divide by: 1."""
    if rewards.numel() < 2:
        return 1.0
    return 1.0 / (float(rewards.double().std()) + eps)


# ----------------------------------------------------------------- logprobs

def sampling_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0,
                    top_p: float = 1.0) -> torch.Tensor:
    """The logits of the sampling policy (after temperature and top-p), fp32: [B, T, V].

    vLLM records "processed" logprobs (after temperature and top-p), so the learner
    applies the same transforms or the gap check compares two different distributions.
    Temperature <= 0 (greedy) has no sampling distribution; it is scored at 1.
    """
    t = temperature if temperature > 0 else 1.0
    scaled = logits.float() / t
    if top_p < 1.0:
        # The rollout sampled the token, so it was inside vLLM's nucleus; the learner's own
        # nucleus (other kernels, other rounding) can just miss it, and one -inf would skip
        # the whole step. Score over nucleus + the sampled token: the plain nucleus rule
        # whenever the token is inside it, finite (and close) when it is at the edge.
        idx = tokens.long().unsqueeze(-1)
        scaled = top_p_filter(scaled, top_p).scatter(-1, idx, scaled.gather(-1, idx))
    return scaled


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0,
                   top_p: float = 1.0) -> torch.Tensor:
    """log pi(tokens) under the sampling policy: [B, T, V], [B, T] -> [B, T]."""
    scaled = sampling_logits(logits, tokens, temperature, top_p)
    return torch.log_softmax(scaled, dim=-1).gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)


def entropy(scaled: torch.Tensor) -> torch.Tensor:
    """H of the distribution softmax(scaled) per position, [..., V] -> [...]. Written as
    logsumexp - E[z] so tokens outside the nucleus (z = -inf, p = 0) add 0 to the value
    and to the gradient instead of 0 * inf."""
    finite = scaled.masked_fill(torch.isinf(scaled), 0.0)
    return torch.logsumexp(scaled, dim=-1) - (torch.softmax(scaled, dim=-1) * finite).sum(-1)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """-inf outside the nucleus, vLLM's rule: sort ascending, drop tokens whose cumulative
    probability is <= 1 - top_p, always keep the most likely one."""
    sorted_logits, order = logits.sort(dim=-1)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cum <= 1.0 - top_p
    drop[..., -1] = False
    mask = torch.zeros_like(drop).scatter(-1, order, drop)
    return logits.masked_fill(mask, float("-inf"))


def correction_weights(log_ratio: torch.Tensor, mask: torch.Tensor, kind: str, cap: float = 2.0,
                       low: float = 0.5, high: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, corrected) per token, [B, T], from log(pi_learner / pi_rollout); detached.

    ``tis_token``: min(r_t, cap). ``tis_seq``: min(r, cap) with r the row's product of
    token ratios. ``mis_token`` / ``mis_seq``: r where r lies in [1/cap, cap], else 0
    (masked importance sampling). ``icepop``: r_t where it lies in [low, high], else 0.
    ``corrected``: the tokens a bound changed (truncated or dropped)."""
    m = mask.bool()
    lr = log_ratio.detach().float().masked_fill(~m, 0.0)
    if kind == "none":
        return torch.ones_like(lr), torch.zeros_like(m)
    if kind.endswith("_seq"):
        lr = lr.sum(-1, keepdim=True).expand_as(lr)
    r = torch.exp(lr)
    if kind.startswith("tis"):
        return r.clamp(max=cap), (r > cap) & m
    lo, hi = (low, high) if kind == "icepop" else (1.0 / cap, cap)
    keep = (r >= lo) & (r <= hi)
    return torch.where(keep, r, torch.zeros_like(r)), ~keep & m


def token_weights(log_ratio: torch.Tensor, mask: torch.Tensor, stale: torch.Tensor, importance_cap: float,
                  kind: str = "none", cap: float = 2.0, low: float = 0.5, high: float = 2.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, corrected): the rollout correction on every row, then the stale rows' cap.

    Both bound the one ratio pi_learner / pi_rollout (on a stale row it holds the policy's
    drift and the engines' mismatch alike), so they compose by taking the smaller bound,
    never by multiplying the ratio in twice. Without a correction: min(r_t, importance_cap)
    on stale rows, 1 elsewhere (V-trace's truncation; ``importance_cap <= 0`` turns it
    off). 0 on padding."""
    w, corrected = correction_weights(log_ratio, mask, kind, cap, low, high)
    if importance_cap > 0:
        on_stale = torch.exp(log_ratio.detach().float()) if kind == "none" else w
        w = torch.where(stale.bool().unsqueeze(-1), on_stale.clamp(max=importance_cap), w)
    return w * mask.float(), corrected


# ----------------------------------------------------------------- loss

def token_coefficients(mask: torch.Tensor, norm: str) -> torch.Tensor:
    """c_r per token ([B, T]): 1 for token norm, 1/T_r for sequence norm; 0 on padding."""
    m = mask.float()
    if norm in ("token", "constant"):
        return m
    if norm == "sequence":
        return m / m.sum(-1, keepdim=True).clamp(min=1.0)
    raise ValueError(f"loss_norm must be 'token', 'sequence' or 'constant', got {norm!r}")


def loss_denominator(mask: torch.Tensor, norm: str, budget: int = 1) -> float:
    """D for a batch: response tokens (token norm), rows with at least one token
    (sequence), or those rows x ``budget`` tokens each (constant)."""
    m = mask.float()
    if norm == "token":
        return float(m.sum())
    rows = float((m.sum(-1) > 0).sum())
    return rows * budget if norm == "constant" else rows


def reinforce_terms(lp: torch.Tensor, adv: torch.Tensor, weights: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """Un-normalised loss sum: -sum c * w * A * lp. Split from the denominator so ranks can sum first."""
    return -(coef * weights * adv.float().unsqueeze(-1) * lp).sum()


def ppo_clip_terms(lp: torch.Tensor, lp_old: torch.Tensor, adv: torch.Tensor, weights: torch.Tensor,
                   coef: torch.Tensor, clip_low: float, clip_high: float) -> torch.Tensor:
    """Un-normalised PPO loss sum: -sum c * w * min(rho A, clip(rho, 1 - low, 1 + high) A),
    rho = exp(lp - lp_old). At rho = 1 its gradient is :func:`reinforce_terms`'."""
    rho = torch.exp(lp - lp_old.detach())
    a = adv.float().unsqueeze(-1)
    surrogate = torch.minimum(rho * a, rho.clamp(1.0 - clip_low, 1.0 + clip_high) * a)
    return -(coef * weights * surrogate).sum()


def clipped(lp: torch.Tensor, lp_old: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clip_low: float,
            clip_high: float) -> torch.Tensor:
    """Tokens whose clip binds (no gradient): rho above 1 + high with A > 0, below 1 - low with A < 0."""
    rho = torch.exp(lp.detach() - lp_old)
    a = adv.unsqueeze(-1)
    return mask.bool() & (((a > 0) & (rho > 1.0 + clip_high)) | ((a < 0) & (rho < 1.0 - clip_low)))


def kl_estimate(lp: torch.Tensor, lp_ref: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled by pi, d = lp - lp_ref:
    k1 = d (unbiased, high variance), k2 = d^2 / 2, k3 = exp(-d) - 1 + d (unbiased, >= 0,
    low variance; Schulman's). Differentiable in lp."""
    d = lp - lp_ref.detach()
    if kind == "k1":
        return d
    if kind == "k2":
        return 0.5 * d * d
    if kind == "k3":
        return torch.exp(-d) - 1.0 + d
    raise ValueError(f"kl_estimator must be k1, k2 or k3, got {kind!r}")


def regulariser_terms(coef: torch.Tensor, kl: torch.Tensor | None, kl_coef: float, ent: torch.Tensor | None,
                      entropy_coef: float) -> torch.Tensor:
    """Un-normalised sum c * (kl_coef * KL - entropy_coef * H); unweighted by w, as the
    penalties are not rewards the rollout earned."""
    out = torch.zeros((), device=coef.device)
    if kl is not None and kl_coef:
        out = out + kl_coef * (coef * kl).sum()
    if ent is not None and entropy_coef:
        out = out - entropy_coef * (coef * ent).sum()
    return out


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
