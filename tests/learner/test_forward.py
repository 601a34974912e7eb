"""The chunked log-probabilities (gradient formed in the forward, no [tokens, vocab] tensor
kept) against plain autograd of lm_head + ``algos.token_logprobs``, and the choice of
packing."""

from __future__ import annotations

import pytest
import torch

from neuromas_dist.learner.forward import ChunkedLogprobs, ForwardSpec, head_scores, resolve_packing


def head_logprobs(head, spec):
    """log pi(token) alone: the first column of the head's scores."""
    scores = head_scores(head, spec)
    return lambda hidden, tokens: scores(hidden, tokens)[:, 0]


def spec(temperature: float = 1.0, top_p: float = 1.0, softcap: float | None = None) -> ForwardSpec:
    return ForwardSpec(False, "chunked", 3, temperature, top_p, softcap)


@pytest.mark.parametrize("temperature,top_p,softcap", [(1.0, 1.0, None), (0.7, 0.9, None), (1.0, 1.0, 5.0)])
@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_chunked_logprobs_and_their_gradient_equal_plain_autograd(temperature, top_p, softcap, chunk):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False, dtype=torch.float64)
    head.weight.requires_grad_(False)  # lm_head is frozen
    hidden = torch.randn(7, 8, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 50, (7,))
    upstream = torch.randn(7, dtype=torch.float64)  # stands in for -c w A of the loss
    fn = head_logprobs(head, spec(temperature, top_p, softcap))

    want = fn(hidden, tokens)
    (want_grad,) = torch.autograd.grad((want * upstream).sum(), hidden)
    got = ChunkedLogprobs.apply(hidden, tokens, fn, chunk)
    (got_grad,) = torch.autograd.grad((got * upstream).sum(), hidden)
    # token_logprobs works in fp32: the two orders of the same products agree to its rounding
    assert torch.equal(got, want.detach())
    assert torch.allclose(got_grad, want_grad, rtol=1e-6, atol=1e-7)


def test_chunked_logprobs_without_grad_keep_nothing():
    head = torch.nn.Linear(4, 10, bias=False)
    with torch.no_grad():
        out = ChunkedLogprobs.apply(torch.randn(5, 4), torch.zeros(5, dtype=torch.long), head_logprobs(head, spec()), 2)
    assert out.shape == (5,) and not out.requires_grad


def test_softcap_is_gemma_s_tanh_cap():
    head = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[10.0, 0.0], [0.0, 0.0], [-10.0, 0.0]]))
    lp = head_logprobs(head, spec(softcap=2.0))(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    capped = 2.0 * torch.tanh(torch.tensor([5.0, 0.0, -5.0]))
    assert lp.item() == pytest.approx(torch.log_softmax(capped, -1)[0].item())


def test_packing_auto_packs_only_with_varlen_attention(monkeypatch):
    from neuromas_dist.learner import forward

    monkeypatch.setattr(forward, "varlen_attention_available", lambda: False)
    assert resolve_packing("auto") == (False, None)
    assert resolve_packing("on") == (True, None)  # exact under SDPA's block mask, just not cheaper
    assert resolve_packing("off") == (False, None)
    monkeypatch.setattr(forward, "varlen_attention_available", lambda: True)
    assert resolve_packing("auto") == (True, "flash_attention_2")
