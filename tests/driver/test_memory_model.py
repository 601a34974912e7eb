"""The learner's memory model (``driver/memory_model.py``) against measurement: peak CUDA
memory measured on an H200, allocator-level peaks measured here on small architectures,
and the structure it reads off an architecture, worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuromas_dist.config import load_config
from neuromas_dist.driver.memory_model import GIB, layer_bytes_per_token, learner_memory, measure

REPO = Path(__file__).resolve().parents[2]
QWEN3 = REPO / "configs" / "neuromas3_qwen3-0.6b_gsm8k.yaml"
GEMMA3 = REPO / "configs" / "neuromas3_gemma3-1b_gsm8k.yaml"

# Peak CUDA memory allocated by one learner rank (weights included), measured on an NVIDIA
# H200 with the learner of commit 871c0a9 (../shared/GPU.md): Qwen3-0.6B's architecture,
# random bf16 weights, LoRA r16 on q/v, 3 nodes, ZeRO-2, world size 1, rows of 384 prompt +
# 384 response tokens, all of one length, full logits and passes of a fixed row count (that
# learner's only path: learner.logits=full, max_tokens_per_micro_batch=0). The default path
# (chunked logits, a token budget) waits for a GPU to be measured (python -m benchmarks.gpu_check).
H200_PEAK_GIB = {8: 16.8, 32: 64.5}


@pytest.mark.parametrize("rows", sorted(H200_PEAK_GIB))
def test_plan_holds_the_h200_measurements(rows):
    cfg = load_config(QWEN3, ["model.max_model_len=768", "sampling.max_new_tokens=384", "learner.num_ranks=1",
                              f"learner.micro_batch_size={rows}", "resources.gpu_memory_gb=141",
                              "learner.logits=full", "learner.max_tokens_per_micro_batch=0"])
    plan = learner_memory(cfg, measure(cfg), padded=False)  # the measured rows had one length
    ratio = sum(plan.values()) / GIB / H200_PEAK_GIB[rows]
    assert abs(ratio - 1) <= 0.15, f"plan / measured = {ratio:.3f}"
    # the issue asks for 15%; the model is built from the saved tensors, not fitted, and lands
    # within 2%: a drift past 5% means the learner keeps something the model does not know of
    assert abs(ratio - 1) <= 0.05, f"plan / measured = {ratio:.3f}"
    assert plan["weights"] == pytest.approx(1.11 * GIB, rel=0.01)


def test_plan_holds_allocator_peaks_of_small_architectures(tmp_path):
    """Measured here, per case: the peak tensor bytes the allocator reports while one
    micro-batch runs (torch's profiler memory events on the CPU; max_memory_allocated on
    CUDA). The cases vary what the model reads from the architecture: dtype (fp32 keeps no
    upcast copies), layers, widths, kv heads, all seven LoRA targets, a large vocabulary with
    top-p, and rows of two lengths (a padding mask)."""
    from benchmarks.learner_memory import CASES, measure_case

    results = [measure_case(case, tmp_path) for case in CASES]
    off = {r["case"]["name"]: round(r["plan_over_measured"], 3) for r in results
           if abs(r["plan_over_measured"] - 1) > 0.15}
    assert not off, f"plan / measured outside 15%: {off}"
    assert all(r["measured_bytes"] > 10 * 2 ** 20 for r in results)  # a real measurement, not an empty window


def test_structure_read_off_the_architecture():
    """Qwen3-0.6B: two norms a layer plus q/k norms; q 16 x 128 = 2048, kv 8 x 128 = 1024,
    MLP 3072. bf16, LoRA r16 on q and v (one shared input of 1024), one length:
      norms 2 x 4 x 1024 + 4 x (2048 + 1024)        = 8,192 + 12,288
      attention 2 x (2 x 2048 + 2 x 1024) + 4 x 16  = 12,352
      MLP 3 x 2 x 3072                              = 18,432
      LoRA 2 x (1024 + 2 x 16)                      = 2,112     -> 53,376 bytes a token a layer
    With a padding mask k and v are kept at the query's width: + 2 x 2 x (2048 - 1024)."""
    a = measure(load_config(QWEN3))
    assert (a.norms, a.qk_norm, a.q_dim, a.kv_dim, a.intermediate) == (2, True, 2048, 1024, 3072)
    assert (a.lora_inputs, a.lora_modules) == (1024, 2)
    assert layer_bytes_per_token(a, 2, 16, padded=False) == 53_376
    assert layer_bytes_per_token(a, 2, 16, padded=True) == 53_376 + 4096

    every = ["lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"]
    g = measure(load_config(GEMMA3, every))
    # Gemma3 has four norms a layer; q/k/v read one input (1152), o_proj the attention's
    # output (4 x 256), gate/up one input (1152), down_proj the MLP's product (6912)
    assert (g.norms, g.qk_norm, g.q_dim, g.kv_dim) == (4, True, 1024, 256)
    assert (g.lora_inputs, g.lora_modules) == (1152 + 1024 + 1152 + 6912, 7)


def test_plan_grows_with_what_it_should():
    rows_only = ["learner.max_tokens_per_micro_batch=0"]
    cfg = load_config(QWEN3, rows_only)
    a = measure(cfg)
    base = learner_memory(cfg, a)
    longer = learner_memory(load_config(QWEN3, [*rows_only, "model.max_model_len=8192"]), a)
    more_rows = learner_memory(load_config(QWEN3, [*rows_only, "learner.micro_batch_size=16"]), a)
    assert more_rows["activations"] == pytest.approx(2 * base["activations"])
    assert longer["activations"] > 2 * base["activations"]  # linear per token, plus the s x s padding mask
    full = [*rows_only, "learner.logits=full"]
    assert learner_memory(load_config(QWEN3, [*full, "learner.micro_batch_size=16"]), a)["logits"] == pytest.approx(
        2 * learner_memory(load_config(QWEN3, full), a)["logits"])
    nucleus = learner_memory(load_config(QWEN3, [*rows_only, "sampling.top_p=0.9"]), a)
    assert nucleus["logits"] > base["logits"] and nucleus["activations"] == base["activations"]


def test_chunked_logits_and_a_token_budget_bound_the_pass():
    """Qwen3-0.6B, 32 rows of 384 + 384 tokens (the H200 shape): full logits keep
    2 x 24,576 x 151,936 bytes + 12 x 12,288 x 151,936 = 27.8 GiB; chunks of 1,024 tokens
    keep 12 x 1,024 x 151,936 bytes (1.74 GiB) and 2 x 12,288 x 1,024 of hidden-state
    gradients (24 MiB)."""
    shape = ["model.max_model_len=768", "sampling.max_new_tokens=384", "learner.micro_batch_size=32",
             "learner.max_tokens_per_micro_batch=0"]
    a = measure(load_config(QWEN3, shape))
    full = learner_memory(load_config(QWEN3, [*shape, "learner.logits=full"]), a, padded=False)["logits"]
    chunked = learner_memory(load_config(QWEN3, shape), a, padded=False)["logits"]
    assert full / GIB == pytest.approx((2 * 24_576 + 12 * 12_288) * 151_936 / GIB)
    assert chunked == 12 * 1_024 * 151_936 + 2 * 12_288 * 1_024
    # a budget of 8,192 tokens: padded passes of 10 rows of 768, packed ones of 8,192 tokens
    budget = [*shape[:3], "learner.max_tokens_per_micro_batch=8192"]
    padded = learner_memory(load_config(QWEN3, budget), a)
    packed = learner_memory(load_config(QWEN3, [*budget, "learner.padding_free=on"]), a)
    per_token = a.layers * layer_bytes_per_token(a, 2, 16, padded=False)
    assert packed["activations"] == 8_192 * per_token
    assert padded["activations"] == 10 * 768 * a.layers * layer_bytes_per_token(a, 2, 16, padded=True) + 10 * 768 ** 2
