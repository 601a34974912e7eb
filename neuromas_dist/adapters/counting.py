"""LoRA parameter counts from a model's architecture, without its weights.

The model is instantiated on the meta device (no memory, no download), so the count comes
from the real module shapes rather than a hand formula that could drift from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def arch_config(path: str | Path):
    """A transformers config from an architecture JSON (``model_type`` + shape fields)."""
    fields = {k: v for k, v in json.loads(Path(path).read_text()).items() if not k.startswith("_")}
    return AutoConfig.for_model(**fields)


def lora_param_count(model_config, target_modules: Sequence[str], rank: int) -> int:
    """Parameters of one LoRA adapter: rank * (in + out) for every targeted Linear."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    targets = set(target_modules)
    return sum(rank * (m.in_features + m.out_features)
               for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets)
