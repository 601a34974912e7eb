"""The GPU path of the learner: bf16 weights on the CUDA device (skipped without a GPU)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from learner_helpers import NODES, make_batch, small_config

pytestmark = pytest.mark.gpu


def test_bf16_learner_runs_on_the_gpu_and_agrees_with_fp32(make_rank, vocab):
    cfg = small_config()
    bf16 = make_rank(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype="auto")))
    param = next(bf16.module.parameters())
    assert param.device.type == "cuda" and param.dtype == torch.bfloat16  # auto = bf16 on GPU
    fp32 = make_rank(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype="float32")))
    batch = make_batch(vocab=vocab)
    for got, want in zip(bf16.score(batch), fp32.score(batch)):
        assert got == pytest.approx(want, abs=0.1)  # bf16 rounding of logits, not a different model
    bf16.accumulate(batch)
    metrics = bf16.finish_step()
    assert metrics["learner/skipped_steps"] == 0 and bf16.version == 1
    assert set(NODES) == set(bf16.export().tensors)
