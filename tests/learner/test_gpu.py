"""The GPU path of the learner, on the CUDA device (skipped without a GPU): the bf16 step, the
update against autograd in float32, export to PEFT, resume and checkpoint files. The rest
of tests/learner runs there too (in float32, references on the rank's device); these are
the checks that only mean something on CUDA, and they say so by asserting the device."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from learner_helpers import NODES, make_batch, small_config, to_batch, with_logprobs

from neuromas_dist.learner import checkpoint as ckpt

pytestmark = pytest.mark.gpu


def _on_cuda(cfg, dtype: str):
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype=dtype))


def _step(rank, seed, vocab):
    batch = make_batch(3, 2, vocab=vocab, seed=seed, version=rank.version)
    rank.accumulate(with_logprobs(batch, rank.score(batch)))
    return rank.finish_step()


def test_bf16_learner_runs_on_the_gpu_and_agrees_with_fp32(make_rank, vocab):
    cfg = small_config()
    bf16 = make_rank(_on_cuda(cfg, "auto"))
    param = next(bf16.module.parameters())
    assert param.device.type == "cuda" and param.dtype == torch.bfloat16  # auto = bf16 on GPU
    fp32 = make_rank(_on_cuda(cfg, "float32"))
    batch = make_batch(vocab=vocab)
    for got, want in zip(bf16.score(batch), fp32.score(batch)):
        assert got == pytest.approx(want, abs=0.1)  # bf16 rounding of logits, not a different model
    bf16.accumulate(batch)
    metrics = bf16.finish_step()
    assert metrics["learner/skipped_steps"] == 0 and bf16.version == 1
    assert set(NODES) == set(bf16.export().tensors)


@pytest.mark.parametrize("mode", ["per_node", "mixed"])
def test_update_equals_autograd_in_float32_on_cuda(make_rank, tiny_model_dir, vocab, mode):
    from test_update_equals_autograd import case_config, check_steps, run_steps, step_batches

    cfg = case_config("loo", "token", mode=mode)
    rank = make_rank(cfg)
    assert rank.device.type == "cuda" and next(rank.module.parameters()).dtype == torch.float32
    check_steps(run_steps(rank, step_batches(vocab, seed=11)), str(tiny_model_dir), cfg, rank.device)


def test_bf16_export_loads_in_peft_with_the_same_logprobs(make_rank, vocab, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from neuromas_dist.adapters.peft_io import write_adapter_set
    from neuromas_dist.learner.algos import token_logprobs

    r = make_rank(_on_cuda(small_config(lr=5e-2), "bfloat16"))
    assert r.device.type == "cuda"
    for seed in (21, 22):
        _step(r, seed, vocab)
    dirs = write_adapter_set(tmp_path / "peft", r.export())
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16).to(r.device)
    model = PeftModel.from_pretrained(base, str(dirs["L0N1"]), adapter_name="L0N1").eval()
    row = next(x for x in make_batch(1, 1, vocab=vocab, seed=23).to_pylist() if x["node"] == "L0N1")
    ids = torch.tensor([row["prompt_ids"] + row["response_ids"]], device=r.device)
    tokens = torch.tensor([row["response_ids"]], device=r.device)
    cut = len(row["prompt_ids"]) - 1
    with torch.no_grad():
        lp = token_logprobs(model(input_ids=ids).logits[:, cut:-1], tokens)[0].float().cpu()
        with model.disable_adapter():
            base_lp = token_logprobs(model(input_ids=ids).logits[:, cut:-1], tokens)[0].float().cpu()
    ours = torch.tensor(r.score(to_batch([row]))[0])
    gap = float((lp - ours).abs().max())
    # PEFT keeps loaded adapters in fp32 where the learner computes them in bf16: a rounding
    # gap, far smaller than what the trained adapter changes
    assert gap < 0.05 and float((base_lp - ours).abs().max()) > 3 * gap


def test_bf16_resume_on_cuda_and_checkpoint_files(make_rank, vocab, tmp_path):
    cfg = _on_cuda(small_config(baseline="ema", zero_stage=2, lr=1e-4), "bfloat16")
    a = make_rank(cfg)
    assert a.device.type == "cuda"
    for seed in (1, 2, 3):
        _step(a, seed, vocab)
    masters = [t.detach().clone() for t in ckpt.master_weights(a.optimizer)]
    assert all(t.dtype == torch.float32 for t in masters)  # DeepSpeed's fp32 copies of the bf16 adapters
    path = ckpt.save_checkpoint(tmp_path / "ck", [a.get_state()])
    assert sorted(p.name for p in path.iterdir()) == ["adapters", "learner_state.json", "rank0.json",
                                                      "rank0.safetensors"]
    assert json.loads((path / "learner_state.json").read_text())["version"] == 3
    for seed in (4, 5):
        _step(a, seed, vocab)
    b = make_rank(cfg)
    adapters, learner, ranks = ckpt.load_checkpoint(path)
    b.set_state(adapters, learner, ckpt.rank_state_for(ranks, 0, 1, 2))
    for got, want in zip(ckpt.master_weights(b.optimizer), masters):
        assert torch.equal(got, want)  # the masters themselves, not their bf16 rounding
    for seed in (4, 5):
        _step(b, seed, vocab)
    # same kernels, same order: equal up to CUDA's non-deterministic reductions (atomics in
    # attention's backward), far below one bf16 step of the weights
    for node in NODES:
        for k, v in a.export().tensors[node].items():
            torch.testing.assert_close(b.export().tensors[node][k].float(), v.float(), rtol=0, atol=2e-3)
