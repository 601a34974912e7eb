"""`launch --plan`: placement, per-actor memory and sync bytes from the architecture on the
meta device (no weights, no download), checked against numbers worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuromas_dist import launch
from neuromas_dist.config import load_config
from neuromas_dist.driver.plan import GIB, PlanError, make_plan, measure

REPO = Path(__file__).resolve().parents[2]
QWEN3 = REPO / "configs" / "neuromas3_qwen3-0.6b_gsm8k.yaml"


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")),
                         ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_config_plans(path, capsys):
    assert launch.main(["--plan", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    for part in ("placement", "rollout worker x", "learner rank x", "adapter sync:"):
        assert part in out, part


def test_qwen3_numbers_by_hand():
    """Qwen3-0.6B: 28 layers, 8 KV heads of 128: K and V are 2 x 28 x 8 x 128 = 57,344
    bf16 values = 114,688 bytes per token; q_proj (1024 -> 2048) and v_proj (1024 -> 1024)
    at rank 16: 16 x (3072 + 2048) x 28 = 2,293,760 LoRA parameters per node."""
    cfg = load_config(QWEN3)
    a = measure(cfg)
    assert a.lora_per_node == 2_293_760 and a.kv_per_token * 2 == 114_688
    _, n = make_plan(cfg)
    roll = n["rollout"]
    left = 0.85 * 80 * GIB - roll["weights"] - roll["lora_slots"]
    assert roll["weights"] == a.params * 2 and roll["kv_tokens"] == pytest.approx(left / 114_688)
    assert n["sync_bytes"] == 3 * 2_293_760 * 2 and n["full_sync_bytes"] == a.params * 2
    learn = n["learner"]
    # ZeRO 2 over 2 ranks: fp32 master + AdamW moments (12 bytes) halved per rank
    assert learn["optimizer"] == pytest.approx(3 * 2_293_760 * 12 / 2)


def test_a_config_that_does_not_fit_is_one_line(capsys):
    assert launch.main(["--plan", "--config", str(QWEN3), "resources.gpu_memory_gb=24",
                        "learner.micro_batch_size=32"]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith("plan error: a learner rank needs about") and "\n" not in out
    with pytest.raises(PlanError, match="KV cache holds"):
        make_plan(load_config(QWEN3, ["resources.gpu_memory_gb=1.5"]))


def test_placement_names_the_node_kind():
    cfg = load_config(QWEN3, ["resources.rollout_node_resource=rollout_node",
                              "resources.learner_node_resource=learner_node"])
    text, _ = make_plan(cfg)
    assert "learner rank 1 on a node offering learner_node" in text
    assert "rollout worker 0 on a node offering rollout_node" in text


def test_a_hub_model_without_arch_config_is_one_line():
    cfg = load_config(QWEN3, ["model.arch_config=", "model.name_or_path=nobody/no-such-model"])
    with pytest.raises(PlanError, match="set model.arch_config"):
        make_plan(cfg)


def test_fewer_lora_slots_shrink_the_rollout_estimate_and_reach_vllm():
    from neuromas_dist.rollout.engine import engine_kwargs

    every = load_config(QWEN3)
    one = load_config(QWEN3, ["rollout.max_loras=1"])
    a = measure(every)
    slots = {name: make_plan(cfg)[1]["rollout"]["lora_slots"] for name, cfg in (("every", every), ("one", one))}
    assert slots["every"] == 3 * slots["one"] == 3 * a.lora_per_slot * 2
    assert engine_kwargs(every, "m")["max_loras"] == 3 and engine_kwargs(one, "m")["max_loras"] == 1


def test_the_one_gpu_config_fits_one_80gb_card():
    """What most users try first: rollout and learner colocated on one 80 GB card."""
    from neuromas_dist.driver.placement import bundles

    cfg = load_config(REPO / "configs" / "neuromas3_qwen3-0.6b_1gpu.yaml")
    assert cfg.resources.colocate and cfg.resources.gpu_memory_gb == 80
    assert [b.get("GPU") for b in bundles(cfg)] == [1.0]  # one bundle, one whole GPU
    text, n = make_plan(cfg)
    assert text.splitlines()[-1].startswith("fit: a learner rank needs") and text.endswith("fits")
    vllm_share = cfg.rollout.gpu_memory_utilization * 80 * GIB
    assert n["rollout"]["weights"] + n["rollout"]["lora_slots"] + n["rollout"]["kv_cache"] == pytest.approx(vllm_share)
    assert sum(n["learner"].values()) < 80 * GIB - vllm_share
