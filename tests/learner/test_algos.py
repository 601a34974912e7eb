"""The REINFORCE pieces against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from neuromas_dist.learner import algos


def test_ema_update_starts_at_first_mean_then_decays():
    # node a: first seen -> 0.5; node b: 0.9 * 1.0 + 0.1 * 0.0 = 0.9
    state = algos.ema_update({"b": 1.0}, {"a": 0.5, "b": 0.0}, decay=0.9)
    assert state == pytest.approx({"a": 0.5, "b": 0.9})
    # the input state is not mutated (pure)
    assert algos.ema_update({}, {}, 0.9) == {}


def test_batch_mean_and_loo_baselines():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    # mean = 3/4
    assert algos.batch_mean_baseline(r).tolist() == [0.75] * 4
    # loo: (3 - r_i) / 3 -> [2/3, 1, 2/3, 2/3]
    assert algos.loo_baseline(r).tolist() == pytest.approx([2 / 3, 1.0, 2 / 3, 2 / 3])
    # advantages: [1/3, -1, 1/3, 1/3]
    adv = algos.advantages(r, algos.loo_baseline(r))
    assert adv.tolist() == pytest.approx([1 / 3, -1.0, 1 / 3, 1 / 3])
    # one lone sample: no peer, advantage 0
    assert algos.advantages(torch.tensor([1.0]), algos.loo_baseline(torch.tensor([1.0]))).tolist() == [0.0]


def test_token_logprobs_divides_by_temperature():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # probs at T=1: [1/4, 3/4]
    tok = torch.tensor([[1]])
    assert algos.token_logprobs(logits, tok, 1.0).item() == pytest.approx(math.log(0.75))
    # T=0.5 doubles the logits: exp(2 log 3) = 9 -> p = 9/10
    assert algos.token_logprobs(logits, tok, 0.5).item() == pytest.approx(math.log(0.9))


def test_importance_weights_truncated_on_stale_rows_only():
    cur = torch.tensor([[0.0, 0.0], [0.0, -1.0]])
    beh = torch.tensor([[-2.0, 0.0], [-1.0, 0.0]])
    stale = torch.tensor([False, True])
    w = algos.importance_weights(cur, beh, stale, cap=2.0)
    # row 0 on-policy -> 1; row 1: exp(1)=2.718 -> capped at 2, exp(-1)=0.368
    assert w.flatten().tolist() == pytest.approx([1.0, 1.0, 2.0, math.exp(-1.0)])
    assert algos.importance_weights(cur, beh, stale, cap=0.0).tolist() == [[1.0, 1.0], [1.0, 1.0]]


def _fixed_batch():
    # row 0: 3 tokens, row 1: 1 token (the rest is padding)
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    adv = torch.tensor([2.0, -1.0])
    return lp, adv, mask


def test_reinforce_loss_token_norm_by_hand():
    lp, adv, mask = _fixed_batch()
    # -(2 * (-1 - 2 - 3) + (-1) * (-0.5)) / 4 tokens = -(-12 + 0.5) / 4 = 2.875
    assert algos.reinforce_loss(lp, adv, mask, "token").item() == pytest.approx(2.875)


def test_reinforce_loss_sequence_norm_by_hand():
    lp, adv, mask = _fixed_batch()
    # per-row means: row 0: 2 * (-6 / 3) = -4; row 1: -1 * -0.5 = 0.5; -(-4 + 0.5) / 2 rows = 1.75
    assert algos.reinforce_loss(lp, adv, mask, "sequence").item() == pytest.approx(1.75)


def test_reinforce_loss_with_weights_and_gradient():
    lp, adv, mask = _fixed_batch()
    lp = lp.clone().requires_grad_(True)
    w = torch.tensor([[0.5, 1.0, 1.0], [1.0, 1.0, 1.0]])
    # -(2 * (0.5 * -1 - 2 - 3) + 0.5) / 4 = -(-11 + 0.5) / 4 = 2.625
    loss = algos.reinforce_loss(lp, adv, mask, "token", weights=w)
    assert loss.item() == pytest.approx(2.625)
    loss.backward()
    # d loss / d lp = -c * w * A / D: row 0: -2 * [0.5, 1, 1] / 4; row 1: +1/4 then padding 0
    assert lp.grad.flatten().tolist() == pytest.approx([-0.25, -0.5, -0.5, 0.25, 0.0, 0.0])


def test_logprob_gap_and_k3():
    ll = torch.tensor([[0.0, -1.0, 9.0]])
    lr = torch.tensor([[0.0, -2.0, 0.0]])
    mask = torch.tensor([[True, True, False]])
    gap, kl, n = algos.logprob_gap(ll, lr, mask)
    # d = [0, 1]: |d| sum = 1; k3 = (e^0 - 1 - 0) + (e^1 - 1 - 1) = e - 2
    assert (gap, n) == (1.0, 2)
    assert kl == pytest.approx(math.e - 2)
    assert algos.logprob_gap(ll, lr, torch.zeros_like(mask)) == (0.0, 0.0, 0)


def test_top_p_keeps_the_nucleus_and_renormalises():
    # probs [0.1, 0.2, 0.7]; top_p = 0.75: ascending cumsum [0.1, 0.3, 1.0] <= 0.25 drops token 0
    logits = torch.log(torch.tensor([[[0.1, 0.2, 0.7]]]))
    lp = algos.token_logprobs(logits.expand(1, 2, 3), torch.tensor([[1, 2]]), 1.0, top_p=0.75)
    # renormalised over {1, 2}: 0.2 / 0.9 and 0.7 / 0.9
    assert lp.exp().flatten().tolist() == pytest.approx([0.2 / 0.9, 0.7 / 0.9])
    # a sampled token outside the learner's nucleus is scored over nucleus + itself, never -inf
    assert algos.token_logprobs(logits, torch.tensor([[0]]), 1.0, top_p=0.75).item() == pytest.approx(math.log(0.1))
