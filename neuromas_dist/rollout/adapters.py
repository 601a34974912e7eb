"""Initial node adapters (version 0): LoRA B = 0, so every node starts as the base model.

Shapes and PEFT key names come from wrapping the base model *on the meta device* (no
weights loaded, so this is cheap even for a large model); the tensors are then made on
the CPU the way PEFT initialises them (A Kaiming-uniform, B zero). Each node's A gets
its own seed so nodes are not identical once B starts to move.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any, Sequence

import torch

from neuromas_dist.adapters.peft_io import AdapterSet, peft_config_dict, peft_lora_config
from neuromas_dist.config import LoraConfig


def lora_shapes(model_dir: str | Path, lora_cfg: LoraConfig, *, trust_remote_code: bool = False
                ) -> tuple[dict[str, tuple[int, ...]], dict[str, Any]]:
    """PEFT state-dict key -> shape of one node adapter, and its adapter_config."""
    # Imported here: PEFT and transformers' model classes cost ~5 s, which a driver that
    # neither grows nor checks adapters should not wait for before Ray starts.
    import peft
    from transformers import AutoConfig, AutoModelForCausalLM

    peft_cfg = peft_config_dict(lora_cfg, str(model_dir))
    config = AutoConfig.from_pretrained(str(model_dir), trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    wrapped = peft.get_peft_model(model, peft_lora_config(lora_cfg))
    state = peft.get_peft_model_state_dict(wrapped)
    return {k: tuple(v.shape) for k, v in state.items()}, peft_cfg


class IncompatibleAdapters(ValueError):
    """Adapters made for another base model or another LoRA config than this run's."""


def check_adapter_shapes(adapters: AdapterSet, shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """Every node's tensors must have this model's LoRA keys and shapes (one line otherwise)."""
    for node, tensors in sorted(adapters.tensors.items()):
        got = {k: tuple(v.shape) for k, v in tensors.items()}
        if got == shapes:
            continue
        differ = sorted(k for k in set(got) | set(shapes) if got.get(k) != shapes.get(k))
        key = differ[0]
        raise IncompatibleAdapters(
            f"{where}: node {node}'s adapter does not fit this base model and lora config ({len(differ)} tensors "
            f"differ, e.g. {key}: {got.get(key, 'missing')} there, {shapes.get(key, 'absent')} here); "
            f"it was trained on {adapters.peft_config.get('base_model_name_or_path', 'another model')}")


def init_node_tensors(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """A ~ Kaiming-uniform(a=sqrt(5)) like PEFT, B = 0: the adapter adds nothing yet."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key in sorted(shapes):
        shape = shapes[key]
        if ".lora_B." in key:
            out[key] = torch.zeros(shape)
            continue
        bound = 1.0 / math.sqrt(shape[-1])  # kaiming_uniform_ with a=sqrt(5) reduces to this
        out[key] = (torch.rand(shape, generator=gen) * 2 - 1) * bound
    return out


def node_seed(node: str, seed: int = 0) -> int:
    return zlib.crc32(f"{seed}:{node}".encode()) & 0x7FFFFFFF


def zero_adapter_set(model_dir: str | Path, node_names: Sequence[str], lora_cfg: LoraConfig, *,
                     seed: int = 0, trust_remote_code: bool = False) -> AdapterSet:
    """Version-0 adapters for ``node_names``: zero contribution (B = 0)."""
    shapes, peft_cfg = lora_shapes(model_dir, lora_cfg, trust_remote_code=trust_remote_code)
    tensors = {node: init_node_tensors(shapes, node_seed(node, seed)) for node in node_names}
    return AdapterSet(0, tensors, peft_cfg)


def random_b_adapter_set(base: AdapterSet, version: int, *, scale: float = 0.5,
                         seed: int = 1) -> AdapterSet:
    """``base`` with random non-zero B: a stand-in for a trained version (tests, benchmarks)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for node in sorted(base.tensors):
        tensors[node] = {k: (torch.randn(v.shape, generator=gen) * scale if ".lora_B." in k else v.clone())
                         for k, v in base.tensors[node].items()}
    return AdapterSet(version, tensors, dict(base.peft_config))
