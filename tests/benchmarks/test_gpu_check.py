"""benchmarks/gpu_check.py without a GPU: its CPU-side logic (the pytest summary it reads, the
file it names, the tokenizer it widens, the rollout part skipped without vLLM) and, at toy
scale on the CPU, the learner and rollout parts themselves, with vLLM and the learner agreeing
on the logprobs of the rows vLLM sampled."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import gpu_check

TOY_ARCH = {"model_type": "qwen3", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,  # vLLM's CPU attention: 64
            "vocab_size": 1000, "max_position_embeddings": 1024, "tie_word_embeddings": True}
CPU_RUN = ["resources.rollout_gpus=0", "resources.learner_gpus=0", "model.max_model_len=512",
           "sampling.max_new_tokens=8", "sampling.n_samples=2", "rollout.enforce_eager=true", "model.dtype=float32"]


def test_pytest_closing_lines_are_counted():
    assert gpu_check.pytest_counts("1 failed, 40 passed, 2 skipped, 3 deselected in 12.30s") == \
        {"passed": 40, "failed": 1, "skipped": 2, "errors": 0}
    assert gpu_check.pytest_counts("18 failed, 32 passed, 2 errors in 99s")["errors"] == 2
    assert gpu_check.pytest_counts("no tests ran in 0.01s") == {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}


def test_result_file_is_named_after_the_device():
    assert gpu_check.device_slug("NVIDIA H200") == "nvidia_h200"
    assert gpu_check.device_slug("NVIDIA A100-SXM4-80GB") == "nvidia_a100_sxm4_80gb"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path, capsys):
    assert gpu_check.main(["--out-dir", str(tmp_path)]) == 2
    assert "no CUDA device here" in capsys.readouterr().out and not list(tmp_path.iterdir())


def test_bad_arguments_are_one_line(tmp_path, capsys):
    assert gpu_check.main(["--allow-cpu", "--parts", "learner,speed", "--out-dir", str(tmp_path)]) == 2
    assert "unknown part(s) ['speed']" in capsys.readouterr().out
    with pytest.raises(ValueError, match="six positive integers"):
        gpu_check.learner_shape("8,384")


def test_rollout_part_is_skipped_and_says_why_without_vllm(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    assert gpu_check.rollout_missing() == "vllm not installed: rollout part skipped"


def test_widened_tokenizer_encodes_as_the_tiny_one_and_decodes_every_id(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from benchmarks.random_model import widen_tokenizer

    widen_tokenizer(tmp_path, 1000)
    wide, tiny = AutoTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "What is (3 + 4) * 2 mod 10? The answer is 4."
    assert len(wide) == 1000 and wide(text).input_ids == tiny(text).input_ids
    assert wide.decode([999]) == "<|fill_999|>" and wide.chat_template == tiny.chat_template


@pytest.mark.vllm
def test_learner_and_rollout_parts_at_toy_scale_on_the_cpu(tmp_path, tiny_model_dir):
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(TOY_ARCH))
    args = ["--allow-cpu", "--parts", "learner,rollout", "--arch", str(arch), "--shape", "2,48,16,2,2,1",
            "--questions", "2", "--out-dir", str(tmp_path)]
    assert gpu_check.main(args + [x for o in CPU_RUN for x in ("--override", o)]) == 0
    result = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    assert [(c["nodes"], c["micro_batches"]) for c in result["learner"]] == \
        [(3, "per_node"), (3, "mixed"), (7, "per_node"), (7, "mixed")]
    assert all(c["tokens_per_s"] > 0 and c["peak_gib"] > 0 and c["plan_peak_gib"] > 0 for c in result["learner"])
    roll = result["rollout"]
    assert roll["node_calls"] == 2 * 2 * 3 and roll["generated_tokens"] > 0 and roll["graph_vs_raw_ratio"] > 0
    # float32: vLLM's sampling logprobs and the learner's agree (a wrong adapter is ~1e-1 off)
    assert set(roll["logprob_gap"]) == {"L0N0", "L0N1", "L1N0"}
    assert all(g["tokens"] > 0 and g["max"] < 1e-4 for g in roll["logprob_gap"].values())
    # the CPU twin agrees to 1e-4: no correction has anything to act on
    assert all(set(v.values()) == {0.0} for g in roll["logprob_gap"].values() for v in [g["corrected_share"]])
    assert result["machine"]["vllm"] and result["command"].startswith("python -m benchmarks.gpu_check")


def test_the_correction_shares_by_hand():
    """Row 1: ratios learner/vLLM (1, e, 1); row 2: (1/e). Above C = 2: one token of four;
    outside [1/2, 2]: two; row products e and 1/e: rows of 3 and 1 tokens."""
    from benchmarks.gpu_check import logprob_gaps

    rows = [{"node": "A", "logprobs": [-1.0, -2.0, -0.1]}, {"node": "A", "logprobs": [-1.0]}]
    got = logprob_gaps(rows, [[-1.0, -1.0, -0.1], [-2.0]])["A"]
    assert (got["mean"], got["max"], got["tokens"]) == (0.5, 1.0, 4)
    assert got["corrected_share"] == {"tis_token": 0.25, "tis_seq": 0.75, "mis_token": 0.5, "mis_seq": 1.0,
                                      "icepop": 0.5}
