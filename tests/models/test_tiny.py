"""The locally built tiny model: what it is, that it is reproducible, and that it loads
where the system needs it (transformers + PEFT here; vLLM with LoRA in tests/rollout)."""

from __future__ import annotations

import json

import pytest
import torch

from neuromas_dist.models import sft, tiny


@pytest.fixture(scope="module")
def build_info(tiny_model_dir):
    return json.loads((tiny_model_dir / "build_info.json").read_text())


def test_is_a_qwen3_vllm_cpu_can_run(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["model_type"] == "qwen3"
    assert config["head_dim"] >= 32  # vLLM's CPU attention rejects smaller heads
    tokenizer_config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    assert "chat_template" in tokenizer_config or (tiny_model_dir / "chat_template.jinja").exists()


def test_warm_up_brings_single_steps_not_their_organisation(build_info):
    """What the default run's demonstration (docs/results.md) rests on: the base states sub-results and combines
    them when both are read, but a single call, or a sink missing one, is near chance
    (10 %), so the graph's organisation is what RL has left to find."""
    skills = build_info["hier_skills"]
    assert skills["first_layer_subresult"] > 0.5
    assert skills["sink_reads_x_and_y"] > skills["sink_reads_y_twice"] + 0.3
    assert skills["single_call"] < 0.4
    assert build_info["eval_questions"] == tiny.EVAL_QUESTIONS


def test_cached_build_is_reused(tiny_model_dir):
    before = (tiny_model_dir / "build_info.json").stat().st_mtime_ns
    assert tiny.ensure_tiny_model() == tiny_model_dir
    assert (tiny_model_dir / "build_info.json").stat().st_mtime_ns == before


def test_recipe_hash_follows_the_recipe():
    assert tiny.recipe_hash() == tiny.recipe_hash()
    assert tiny.recipe_hash(sft.SFTConfig(steps=7)) != tiny.recipe_hash()


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def quick_builds(tmp_path_factory):
    """Three short builds (2 SFT steps): seed 0 twice, seed 1 once."""
    root = tmp_path_factory.mktemp("quick")
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        tiny.build_tiny_model(root / name, seed, sft_steps=2, eval_questions=4)
    return root


@pytest.mark.skipif(__import__("platform").machine() != "x86_64", reason="kernel paths are pinned on x86-64 only")
def test_cached_build_ran_with_pinned_kernel_paths(build_info):
    """ensure_tiny_model builds in a child process with MKL and ATen held to AVX2 (see
    tiny.PINNED_ENV), whatever the CPU offers, so machines of this kind agree."""
    assert build_info["cpu_capability"] == "AVX2" and build_info["mkl_cbwr"] == "AVX2"


def test_pinned_builds_agree_bit_for_bit(tmp_path):
    for name in "ab":
        tiny.build_pinned(tmp_path / name, 0, sft_steps=3, eval_questions=4)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_build_is_deterministic_for_a_seed(quick_builds):
    a, b, c = (_weights(quick_builds / n) for n in "abc")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert (quick_builds / "a" / "tokenizer.json").read_bytes() == (quick_builds / "b" / "tokenizer.json").read_bytes()


def test_loads_in_transformers_and_peft_with_two_adapters(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(model, lora, adapter_name="L0N0")
    model.add_adapter("L1N0", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                         init_lora_weights=False))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is (1 + 2) * 3 mod 10?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    logits = {}
    with torch.no_grad():
        for name in ("L0N0", "L1N0"):
            model.set_adapter(name)
            logits[name] = model(**ids).logits[0, -1]
            out = model.generate(**ids, max_new_tokens=4, do_sample=False)
            assert out.shape[1] > ids["input_ids"].shape[1]
    assert not torch.allclose(logits["L0N0"], logits["L1N0"])  # each adapter really acts
