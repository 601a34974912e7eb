"""LoRA parameter counts from a model's architecture, without its weights.

The model is instantiated on the meta device (no memory, no download), so the count comes
from the real module shapes rather than a hand formula that could drift from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import torch


def arch_config(path: str | Path):
    """A transformers config from an architecture JSON (``model_type`` + shape fields)."""
    fields = {k: v for k, v in json.loads(Path(path).read_text()).items() if not k.startswith("_")}
    from transformers import AutoConfig  # here: the rollout engine imports this module for one number

    return AutoConfig.for_model(**fields)


VLLM_RANK_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_rank_bucket(rank: int) -> int:
    """vLLM's ``max_lora_rank`` for adapters of ``rank``: vLLM accepts only a fixed ladder
    of max ranks, and sizes every LoRA slot at it, so the smallest that fits."""
    for bucket in VLLM_RANK_BUCKETS:
        if rank <= bucket:
            return bucket
    raise ValueError(f"lora.rank={rank}: vLLM serves ranks up to {VLLM_RANK_BUCKETS[-1]}")


def meta_model(model_config) -> torch.nn.Module:
    """The model of ``model_config`` on the meta device: real module shapes, no memory."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config)


def lora_linears(model: torch.nn.Module, target_modules: Iterable[str]) -> list[tuple[str, torch.nn.Linear]]:
    """(name, module) of every Linear a LoRA with ``target_modules`` adapts."""
    targets = set(target_modules)
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets]


def lora_param_count(model_config, target_modules: Sequence[str], rank: int) -> int:
    """Parameters of one LoRA adapter: rank * (in + out) for every targeted Linear."""
    return rank * sum(m.in_features + m.out_features for _, m in lora_linears(meta_model(model_config), target_modules))
