"""Growth from a smaller run's saved adapters: which tensors each larger node starts from."""

from __future__ import annotations

import torch

from neuromas_dist.adapters.peft_io import AdapterSet, write_adapter_set
from neuromas_dist.driver.growth import adapters_from_run
from neuromas_dist.graph.topology import Topology

KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"


def _node_tensors(value: float) -> dict[str, torch.Tensor]:
    return {KEY: torch.full((4, 2), value)}


def test_three_to_seven_carries_the_trained_nodes(tmp_path):
    small = AdapterSet(5, {"L0N0": _node_tensors(1.0), "L0N1": _node_tensors(2.0), "L1N0": _node_tensors(3.0)},
                       {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "peft_type": "LORA",
                        "task_type": "CAUSAL_LM", "base_model_name_or_path": "tiny"})
    write_adapter_set(tmp_path / "adapters", small)
    grown, small_topo, how = adapters_from_run(tmp_path, Topology.build((4, 2, 1)))
    assert small_topo.widths == (2, 1)
    got = {node: float(t[KEY][0, 0]) for node, t in grown.tensors.items()}
    # Aligned from the sink: the old sink stays the sink, the old first layer becomes
    # layer 1, the new front layer starts fresh (absent here: the learner's B = 0 init).
    assert got == {"L2N0": 3.0, "L1N0": 1.0, "L1N1": 2.0}
    assert "L0N0" in how and "fresh" in how


def test_adapters_of_another_model_or_lora_config_are_refused_in_one_line(tiny_model_dir, tmp_path):
    """grow_from a run whose adapters were made for another LoRA rank (the same check
    catches another base model: its shapes differ): one line naming the node, before
    anything starts."""
    import dataclasses

    import pytest

    from neuromas_dist.config import load_config
    from neuromas_dist.driver.growth import check_grow_from
    from neuromas_dist.rollout.adapters import IncompatibleAdapters, zero_adapter_set

    cfg = load_config(None, [f"trainer.grow_from={tmp_path}", "topology.widths=[2, 2, 1]", "trainer.growth_mode=carry"])
    other = dataclasses.replace(cfg.lora, rank=4)
    write_adapter_set(tmp_path / "adapters", zero_adapter_set(tiny_model_dir, ["L0N0", "L0N1", "L1N0"], other))
    with pytest.raises(IncompatibleAdapters) as err:
        check_grow_from(cfg, str(tiny_model_dir))
    assert "node L0N0's adapter does not fit" in str(err.value) and "\n" not in str(err.value)
    write_adapter_set(tmp_path / "adapters", zero_adapter_set(tiny_model_dir, ["L0N0", "L0N1", "L1N0"], cfg.lora))
    check_grow_from(cfg, str(tiny_model_dir))  # the same model and config: accepted
