"""Node adapters in flight and on disk.

What travels between learner and rollout workers is an :class:`AdapterSet`: one version
number and, per node, the LoRA tensors keyed exactly as PEFT's
``get_peft_model_state_dict`` names them (``base_model.model....lora_A.weight``). On disk a
node adapter is the standard PEFT layout (``adapter_config.json`` +
``adapter_model.safetensors``), which ``PeftModel.from_pretrained``, vLLM's ``LoRARequest``
and ``vllm serve --lora-modules`` all read. Safetensors only: never pickle.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch
from safetensors.torch import load_file, save_file

from neuromas_dist.config import LoraConfig

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


class AdapterSet(NamedTuple):
    """Every node's adapter at one version: what the learner broadcasts."""

    version: int  # increases by one per learner step; 0 = initial (B = 0 unless grown)
    tensors: Mapping[str, Mapping[str, torch.Tensor]]  # node -> PEFT key -> CPU tensor
    peft_config: Mapping[str, Any]  # adapter_config.json contents, shared by all nodes

    def nbytes(self) -> int:
        """Bytes of tensor data: the payload of one refresh."""
        return sum(t.numel() * t.element_size() for node in self.tensors.values() for t in node.values())


def peft_lora_config(lora_cfg: LoraConfig, base_model: str | None = None) -> Any:
    """The one ``peft.LoraConfig`` of config section ``lora_cfg``: the learner's adapters,
    the rollout's zero adapters and every exported adapter_config.json come from it."""
    import peft  # here: PEFT imports transformers' model classes (~5 s), which reading a run never needs

    # PEFT annotates lora_alpha as int but scales by any number (alpha / r); ours is a float
    return peft.LoraConfig(r=lora_cfg.rank, lora_alpha=lora_cfg.alpha,  # type: ignore[arg-type]
                           lora_dropout=lora_cfg.dropout,
                           target_modules=list(lora_cfg.target_modules), task_type="CAUSAL_LM",
                           base_model_name_or_path=base_model)


def peft_config_dict(lora_cfg: LoraConfig, base_model: str) -> dict[str, Any]:
    """adapter_config.json contents for config.LoraConfig ``lora_cfg`` over ``base_model``."""
    return _jsonable(peft_lora_config(lora_cfg, base_model).to_dict())


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    # PEFT keeps sets and enums in its config dict; adapter_config.json needs plain JSON.
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, set):
            value = sorted(value)
        elif hasattr(value, "value") and not isinstance(value, (int, float, str)):
            value = value.value
        out[key] = value
    return out


def write_peft_dir(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                   peft_config: Mapping[str, Any]) -> Path:
    """Write one node adapter in PEFT layout; atomic, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / WEIGHTS_NAME))
    (tmp / CONFIG_NAME).write_text(json.dumps(dict(peft_config), indent=2, sort_keys=True))
    if path.exists():
        _remove_dir(path)
    os.replace(tmp, path)
    return path


def read_peft_dir(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, adapter_config) of one node adapter written in PEFT layout."""
    path = Path(path)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: not a PEFT adapter directory (missing {name})")
    return load_file(str(path / WEIGHTS_NAME)), json.loads((path / CONFIG_NAME).read_text())


def write_adapter_set(root: str | os.PathLike, adapters: AdapterSet) -> dict[str, Path]:
    """Every node under ``root/<node>``; returns node -> directory."""
    return {node: write_peft_dir(Path(root) / node, t, adapters.peft_config)
            for node, t in adapters.tensors.items()}


def read_adapter_set(root: str | os.PathLike, version: int) -> AdapterSet:
    """Inverse of :func:`write_adapter_set` (every subdirectory with an adapter config)."""
    root = Path(root)
    nodes = sorted(p.name for p in root.iterdir() if (p / CONFIG_NAME).is_file())
    if not nodes:
        raise FileNotFoundError(f"{root}: no PEFT adapter directories found")
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    config: dict[str, Any] = {}
    for node in nodes:
        tensors[node], config = read_peft_dir(root / node)
    return AdapterSet(version, tensors, config)


def _remove_dir(path: Path) -> None:
    for child in path.iterdir():
        child.unlink()
    path.rmdir()
