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
    mask = torch.ones(2, 2, dtype=torch.bool)
    w, _ = algos.token_weights(cur - beh, mask, stale, importance_cap=2.0)
    # row 0 on-policy -> 1; row 1: exp(1)=2.718 -> capped at 2, exp(-1)=0.368
    assert w.flatten().tolist() == pytest.approx([1.0, 1.0, 2.0, math.exp(-1.0)])
    assert algos.token_weights(cur - beh, mask, stale, importance_cap=0.0)[0].tolist() == [[1.0, 1.0], [1.0, 1.0]]


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


# ----------------------------------------------------------------- the objectives of issue 30

def close(got: torch.Tensor, want: list) -> bool:
    return torch.allclose(got.float(), torch.tensor(want), atol=1e-6)


def test_std_scale_is_one_over_the_unbiased_std_plus_eps():
    # rewards [1, 0, 1, 1]: mean 3/4, unbiased variance (3 * 1/16 + 9/16) / 3 = 1/4 -> std 1/2
    assert algos.std_scale(torch.tensor([1.0, 0.0, 1.0, 1.0])) == pytest.approx(1 / (0.5 + algos.STD_EPS))
    assert algos.std_scale(torch.tensor([1.0])) == 1.0  # a lone sample: nothing to divide by
    # all samples equal: the advantages are 0 anyway, the scale stays finite
    assert algos.std_scale(torch.tensor([1.0, 1.0])) == pytest.approx(1 / algos.STD_EPS)


def test_entropy_by_hand_and_outside_the_nucleus():
    # softmax([0, log 3]) = [1/4, 3/4]: H = -(1/4 log 1/4 + 3/4 log 3/4)
    h = algos.entropy(torch.tensor([0.0, math.log(3.0)]))
    assert h.item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    # a token at -inf (outside top-p) adds nothing, and the gradient stays finite
    z = torch.tensor([0.0, math.log(3.0), float("-inf")], requires_grad=True)
    h2 = algos.entropy(z)
    assert h2.item() == pytest.approx(h.item())
    h2.backward()
    assert torch.isfinite(z.grad).all()


def test_ppo_clip_by_hand():
    lp_old = torch.zeros(1, 3)
    # ratios 1.5, 0.5, 1.1 against clip 0.8 / 1.2 (low 0.2, high 0.2)
    lp = torch.log(torch.tensor([[1.5, 0.5, 1.1]])).requires_grad_(True)
    coef, w = torch.ones(1, 3), torch.ones(1, 3)
    # A = +1: min(1.5, 1.2) + min(0.5, 0.8) + min(1.1, 1.1) = 1.2 + 0.5 + 1.1
    loss = algos.ppo_clip_terms(lp, lp_old, torch.tensor([1.0]), w, coef, 0.2, 0.2)
    assert loss.item() == pytest.approx(-(1.2 + 0.5 + 1.1))
    loss.backward()
    # d/d lp of rho is rho where unclipped, 0 where the clip binds (the first token)
    assert close(lp.grad, [[0.0, -0.5, -1.1]])
    # A = -1: min(-1.5, -1.2) + min(-0.5, -0.8) + min(-1.1, -1.1): the second token clipped
    assert algos.ppo_clip_terms(lp, lp_old, torch.tensor([-1.0]), w, coef, 0.2, 0.2).item() == pytest.approx(
        1.5 + 0.8 + 1.1)
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert algos.clipped(lp, lp_old, torch.tensor([1.0]), mask, 0.2, 0.2).tolist() == [[True, False, False]]
    assert algos.clipped(lp, lp_old, torch.tensor([-1.0]), mask, 0.2, 0.2).tolist() == [[False, True, False]]
    # clip-higher (DAPO): high 0.6 lets 1.5 through
    assert algos.clipped(lp, lp_old, torch.tensor([1.0]), mask, 0.2, 0.6).tolist() == [[False, False, False]]


def test_ppo_at_ratio_one_has_reinforces_gradient():
    lp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv, w, coef = torch.tensor([0.7]), torch.tensor([[1.0, 0.5]]), torch.ones(1, 2)
    g_ppo = torch.autograd.grad(algos.ppo_clip_terms(lp, lp.detach(), adv, w, coef, 0.2, 0.2), lp)[0]
    g_rf = torch.autograd.grad(algos.reinforce_terms(lp, adv, w, coef), lp)[0]
    assert torch.allclose(g_ppo, g_rf)


def test_kl_estimators_by_hand():
    lp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    d = math.log(2.0)  # log pi / pi_ref
    assert algos.kl_estimate(lp, ref, "k1").item() == pytest.approx(d)
    assert algos.kl_estimate(lp, ref, "k2").item() == pytest.approx(0.5 * d * d)
    assert algos.kl_estimate(lp, ref, "k3").item() == pytest.approx(0.5 - 1 + d)  # pi_ref/pi = 1/2
    assert algos.kl_estimate(ref, ref, "k3").item() == 0.0
    with pytest.raises(ValueError, match="k4"):
        algos.kl_estimate(lp, ref, "k4")


def test_rollout_corrections_by_hand():
    # token ratios 3, 1, 0.25 on row 0; row 1 holds one token of ratio 1.5 and padding
    lr = torch.log(torch.tensor([[3.0, 1.0, 0.25], [1.5, 7.0, 7.0]]))
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    w, c = algos.correction_weights(lr, mask, "tis_token", cap=2.0)
    assert close((w * mask), [[2.0, 1.0, 0.25], [1.5, 0.0, 0.0]])
    assert c.tolist() == [[True, False, False], [False, False, False]]
    w, c = algos.correction_weights(lr, mask, "mis_token", cap=2.0)  # keep [0.5, 2]
    assert close((w * mask), [[0.0, 1.0, 0.0], [1.5, 0.0, 0.0]])
    assert c.tolist() == [[True, False, True], [False, False, False]]
    # sequence ratio of row 0: 3 * 1 * 0.25 = 0.75; row 1: 1.5 (padding does not count)
    w, c = algos.correction_weights(lr, mask, "tis_seq", cap=1.2)
    assert close((w * mask), [[0.75] * 3, [1.2, 0.0, 0.0]])
    w, _ = algos.correction_weights(lr, mask, "mis_seq", cap=1.2)  # keep [0.833, 1.2]: row 0 dropped
    assert close((w * mask), [[0.0] * 3, [0.0, 0.0, 0.0]])
    w, c = algos.correction_weights(lr, mask, "icepop", low=0.5, high=5.0)
    assert close((w * mask), [[3.0, 1.0, 0.0], [1.5, 0.0, 0.0]])
    assert int(c.sum()) == 1


def test_token_weights_compose_the_stale_cap_with_the_correction():
    lr = torch.log(torch.tensor([[3.0, 0.25], [3.0, 0.25]]))
    mask = torch.ones(2, 2, dtype=torch.bool)
    stale = torch.tensor([False, True])
    # no correction: exactly the stale rows' truncated ratio, as before
    w, _ = algos.token_weights(lr, mask, stale, importance_cap=2.0)
    assert close(w, [[1.0, 1.0], [2.0, 0.25]])
    # tis at 2.5 on every row, the stale row's bound 2.0 is the smaller one: never 3 * 3
    w, _ = algos.token_weights(lr, mask, stale, importance_cap=2.0, kind="tis_token", cap=2.5)
    assert close(w, [[2.5, 0.25], [2.0, 0.25]])
    # icepop drops what lies outside [0.5, 5] on every row, stale or not
    w, _ = algos.token_weights(lr, mask, stale, importance_cap=2.0, kind="icepop", low=0.5, high=5.0)
    assert close(w, [[3.0, 0.0], [2.0, 0.0]])


def test_constant_norm_divides_by_rows_times_the_budget():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    assert algos.loss_denominator(mask, "constant", budget=24) == 2 * 24
    assert torch.equal(algos.token_coefficients(mask, "constant"), mask.float())


def test_regulariser_terms_by_hand():
    coef = torch.tensor([[1.0, 0.5]])
    kl, ent = torch.tensor([[0.2, 0.4]]), torch.tensor([[1.0, 3.0]])
    # 0.1 * (0.2 + 0.2) - 0.01 * (1 + 1.5)
    assert algos.regulariser_terms(coef, kl, 0.1, ent, 0.01).item() == pytest.approx(0.04 - 0.025)
    assert algos.regulariser_terms(coef, None, 0.0, None, 0.0).item() == 0.0
