from pathlib import Path

from transformers import Qwen3Config

from neuromas_dist.adapters.counting import arch_config, lora_param_count

REPO = Path(__file__).resolve().parents[2]


def test_count_matches_hand_formula():
    cfg = Qwen3Config(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=64, vocab_size=300)
    # per layer, rank 8: q 128->128: 8*256; k 128->64: 8*192; v: 8*192; o 128->128: 8*256;
    # gate/up 128->384: 8*512 each; down 384->128: 8*512  => 8*(256+192+192+256+3*512) = 19456
    mods = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert lora_param_count(cfg, mods, 8) == 2 * 19456
    assert lora_param_count(cfg, ["q_proj", "v_proj"], 4) == 2 * 4 * (256 + 192)


def test_paper_baseline_matches_neuromas3():
    arch = arch_config(REPO / "configs" / "arch" / "qwen3-0.6b.json")
    three_nodes = 3 * lora_param_count(arch, ["q_proj", "v_proj"], 16)
    assert three_nodes == lora_param_count(arch, ["q_proj", "v_proj"], 48) == 6_881_280
