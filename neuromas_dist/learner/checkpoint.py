"""Learner checkpoints: safetensors for every tensor, JSON for the rest; no pickle.

Layout of a checkpoint directory::

    adapters/<node>/            PEFT layout (servable as is, and what resume loads)
    rank<r>.safetensors         optimizer state tensors + RNG state of rank r
    rank<r>.json                optimizer param groups/scalars + Python RNG state of rank r
    learner_state.json          version, skipped steps, baselines, nodes, world size, ZeRO stage, extra

Ranks hand their state to the driver, which writes the files, so ranks on other hosts
need no shared filesystem. The directory is written under a temporary name and renamed,
so a crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file

from neuromas_dist.adapters.peft_io import AdapterSet, read_adapter_set, write_adapter_set

STATE_NAME = "learner_state.json"


def flatten_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch optimizer state_dict -> (tensors keyed ``opt.<param>.<name>``, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in state_dict["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"opt.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith("opt."):
            continue
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: str | os.PathLike, rank_states: Sequence[Mapping[str, Any]],
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write what :meth:`LearnerRank.get_state` returned on every rank (rank 0 first)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    head = rank_states[0]
    write_adapter_set(tmp / "adapters", head["adapters"])
    for r, st in enumerate(rank_states):
        save_file(dict(st["tensors"]), str(tmp / f"rank{r}.safetensors"))
        (tmp / f"rank{r}.json").write_text(json.dumps(st["meta"]))
    learner = dict(head["learner"], extra=dict(extra or {}))
    (tmp / STATE_NAME).write_text(json.dumps(learner, indent=2, sort_keys=True))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def read_learner_state(path: str | os.PathLike) -> dict[str, Any]:
    """The learner scalars of a checkpoint (version, baselines, ``extra``), without its tensors."""
    path = Path(path)
    if not (path / STATE_NAME).is_file():
        raise FileNotFoundError(f"{path}: not a learner checkpoint (missing {STATE_NAME})")
    return json.loads((path / STATE_NAME).read_text())


def load_checkpoint(path: str | os.PathLike) -> tuple[AdapterSet, dict[str, Any], list[dict[str, Any]]]:
    """(adapters, learner state incl. ``extra``, per-rank states) of a checkpoint directory."""
    path = Path(path)
    learner = read_learner_state(path)
    adapters = read_adapter_set(path / "adapters", int(learner["version"]))
    ranks = []
    for r in range(int(learner["world_size"])):
        tensors = load_file(str(path / f"rank{r}.safetensors"))
        ranks.append({"tensors": tensors, "meta": json.loads((path / f"rank{r}.json").read_text())})
    return adapters, learner, ranks


def rank_state_for(ranks: Sequence[Mapping[str, Any]], rank: int, world_size: int, zero_stage: int
                   ) -> Mapping[str, Any]:
    """The saved state a new rank loads. ZeRO >= 1 partitions optimizer state, so the
    world size must match; stage 0 replicates it, so any world size can resume."""
    if zero_stage > 0 and len(ranks) != world_size:
        raise ValueError(f"checkpoint has {len(ranks)} ranks but the learner has {world_size}; "
                         f"with learner.zero_stage={zero_stage} the optimizer state is partitioned per rank")
    return ranks[rank] if rank < len(ranks) else ranks[0]


# ----------------------------------------------------------------- one rank's state

def torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside DeepSpeed's wrapper: ZeRO and bf16 wrap it (over fp32
    partitions), and its state is what a checkpoint moves."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer


def master_weights(optimizer: Any) -> list[torch.Tensor]:
    """The tensors the torch optimizer steps. Under bf16 (and under ZeRO) these are DeepSpeed's
    fp32 master copies, of which the model's bf16 adapters are only a rounding: a resume that
    rebuilt them from the adapters would drop every update smaller than one bf16 step, and
    at lr 1e-5 most are (measured: the next steps after such a resume moved weights as far
    from the uninterrupted run's as the steps themselves did)."""
    return [p for group in torch_optimizer(optimizer).param_groups for p in group["params"]]


def rank_state(optimizer: Any) -> dict[str, Any]:
    """A rank's optimizer state (its master weights included) and RNG state:
    safetensors-ready tensors and JSON-able meta."""
    tensors, meta = flatten_optimizer(torch_optimizer(optimizer).state_dict())
    for i, p in enumerate(master_weights(optimizer)):
        tensors[f"master.{i}"] = p.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    version, internal, gauss = random.getstate()
    return {"tensors": tensors, "meta": {"optimizer": meta, "python_rng": [version, list(internal), gauss]}}


def restore_rank_state(optimizer: Any, state: Mapping[str, Any]) -> None:
    tensors, meta = dict(state["tensors"]), state["meta"]
    torch.set_rng_state(tensors.pop("rng.torch"))
    cuda_rng = tensors.pop("rng.cuda", None)
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_rng)
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    with torch.no_grad():
        for i, p in enumerate(master_weights(optimizer)):
            saved = tensors.pop(f"master.{i}", None)  # absent in checkpoints written before they were kept
            if saved is not None:
                if saved.shape != p.shape:
                    raise ValueError(f"checkpoint master weight {i} has shape {tuple(saved.shape)}, this rank's "
                                     f"optimizer {tuple(p.shape)}: another world size, ZeRO stage or topology")
                p.copy_(saved.to(p.device, p.dtype))
    torch_optimizer(optimizer).load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
