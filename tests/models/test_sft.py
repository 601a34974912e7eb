"""The warm-up's training step: length-sorted micro-batches give the gradient of one
padded batch (so the speed-up changes no number that matters)."""

from __future__ import annotations

import random

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from neuromas_dist.models.sft import accumulate_batch


def _model() -> Qwen3ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, head_dim=16, pad_token_id=0)
    return Qwen3ForCausalLM(cfg).float()


def _grads(model, batch, parts) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = accumulate_batch(model, batch, pad_id=0, parts=parts)
    return loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_micro_batches_give_the_one_batch_gradient():
    rng = random.Random(0)
    # Prompts of 3..30 tokens and targets of 1..6: very different paddings per part.
    batch = [([rng.randrange(1, 40) for _ in range(rng.randrange(3, 31))],
              [rng.randrange(1, 40) for _ in range(rng.randrange(1, 7))]) for _ in range(16)]
    model = _model()
    whole_loss, whole = _grads(model, batch, parts=1)
    split_loss, split = _grads(model, batch, parts=4)
    assert abs(whole_loss - split_loss) < 1e-5
    assert whole.keys() == split.keys()
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], atol=1e-6, rtol=1e-4)
