"""Building one learner rank: the process group, the frozen base with one LoRA adapter per
node (PEFT), and the DeepSpeed engine over all adapters' parameters."""

from __future__ import annotations

import os
import random
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import peft
import torch
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

from neuromas_dist.adapters.peft_io import peft_lora_config
from neuromas_dist.config import Config, resolve_dtype

STALE_BUILD_LOCK_S = 900.0


def on_cuda() -> bool:
    """Whether this process's learner runs on CUDA. DeepSpeed fixes its accelerator once per
    process (``DS_ACCELERATOR`` when set, else CUDA when visible); the model's device, its
    dtype and the process group's backend all follow that one choice. Deciding them from
    ``torch.cuda.is_available()`` alone built an NCCL group under DeepSpeed's CPU
    accelerator on a GPU machine ("No backend type associated with device type cpu")."""
    forced = os.environ.get("DS_ACCELERATOR")
    return forced == "cuda" if forced else torch.cuda.is_available()


def torch_dtype(cfg: Config) -> torch.dtype:
    return getattr(torch, resolve_dtype(cfg.model.dtype, on_cuda()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def clear_stale_build_lock(extension: str) -> bool:
    """Remove a torch extension's build lock left by a killed process. DeepSpeed builds its
    CPU shared-memory op on first init_distributed under torch's FileBaton, which has no
    owner: a rank SIGKILLed mid-build leaves the lock, and every later rank (a learner
    rebuilt after a fault included) waits on it for ever. A build takes about a minute
    here; a lock older than STALE_BUILD_LOCK_S is taken as orphaned."""
    try:
        # Deferred: it imports setuptools, which only an op build needs.
        from torch.utils.cpp_extension import _get_build_directory

        lock = Path(_get_build_directory(extension, False)) / "lock"
        if lock.is_file() and time.time() - lock.stat().st_mtime > STALE_BUILD_LOCK_S:
            lock.unlink()
            return True
    except (ImportError, OSError):
        pass
    return False


def build_peft_model(model_dir: str, nodes: Sequence[str], cfg: Config, dtype: torch.dtype,
                     attn_implementation: str | None = None) -> peft.PeftModel:
    """Base model (frozen) wrapped by PEFT with one adapter per node, all trainable."""
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code,
                                                **extra)
    pc = peft_lora_config(cfg.lora)
    model = peft.get_peft_model(base, pc, adapter_name=nodes[0])
    assert isinstance(model, peft.PeftModel)  # not mixed=True's PeftMixedModel
    for node in nodes[1:]:
        model.add_adapter(node, pc)
    return model


def node_params(model: torch.nn.Module, nodes: Sequence[str]) -> dict[str, list[torch.nn.Parameter]]:
    """node -> its LoRA parameters (PEFT names them ``...lora_A.<node>.weight``)."""
    out: dict[str, list[torch.nn.Parameter]] = {n: [] for n in nodes}
    for name, p in model.named_parameters():
        for node in nodes:
            if f".lora_A.{node}." in name or f".lora_B.{node}." in name:
                out[node].append(p)
    for node, ps in out.items():
        if not ps:
            raise ValueError(f"node {node}: no LoRA parameters found (check lora.target_modules)")
    return out


def ds_config(cfg: Config, bf16: bool, trainable: int) -> dict[str, Any]:
    lc = cfg.learner
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,  # the rank does its own accumulation (rank.py)
        "gradient_clipping": float(lc.grad_clip),
        # ZeRO 1/2 allocate a reduce bucket of reduce_bucket_size elements (default 5e8: 0.93 GiB
        # in bf16, 1.9 GB in fp32) at every backward; the adapters are a few million. One bucket
        # that holds them all reduces exactly as before.
        "zero_optimization": {"stage": int(lc.zero_stage), "reduce_bucket_size": max(int(trainable), 1)},
        "bf16": {"enabled": bool(bf16)},
        "zero_allow_untested_optimizer": True,  # torch AdamW: no op compilation on CPU
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def join_process_group(rank: int, world_size: int, master_addr: str, master_port: int | None) -> None:
    import deepspeed

    gpu = on_cuda()
    os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port or free_port()),
                      RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0")
    if not gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        clear_stale_build_lock("deepspeed_shm_comm")
    deepspeed.init_distributed(dist_backend="nccl" if gpu else "gloo", verbose=False)


@dataclass
class Built:
    """What a rank trains: DeepSpeed's engine and optimizer, the PEFT module inside it, and
    each node's LoRA parameters (one flat list too, in node order: the buffers' layout)."""

    engine: Any
    optimizer: Any
    module: peft.PeftModel
    params: dict[str, list[torch.nn.Parameter]]
    all_params: list[torch.nn.Parameter]
    device: torch.device


def build(cfg: Config, model_dir: str, nodes: Sequence[str],
          load_initial: Callable[[torch.nn.Module], None] | None = None,
          attn_implementation: str | None = None) -> Built:
    """The PEFT model and its DeepSpeed engine. ``load_initial`` copies starting adapters
    into the model before DeepSpeed takes its (fp32 master) copy."""
    import deepspeed

    # Same seed on every rank: every rank starts from identical adapters.
    torch.manual_seed(cfg.trainer.seed)
    random.seed(cfg.trainer.seed)
    dtype = torch_dtype(cfg)
    model = build_peft_model(model_dir, nodes, cfg, dtype, attn_implementation)
    if on_cuda():
        model = model.to("cuda")
    params = node_params(model, nodes)
    all_params = [p for n in nodes for p in params[n]]
    for p in all_params:
        p.requires_grad_(True)
    if load_initial is not None:
        load_initial(model)
    opt = torch.optim.AdamW(all_params, lr=cfg.learner.lr, weight_decay=cfg.learner.weight_decay)
    config = ds_config(cfg, dtype == torch.bfloat16, sum(p.numel() for p in all_params))
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=opt, model_parameters=all_params,
                                                   config=config)
    module = engine.module
    module.train()
    return Built(engine, optimizer, module, params, all_params, next(module.parameters()).device)


def node_tensors(module: torch.nn.Module, nodes: Sequence[str]) -> dict[str, dict[str, torch.Tensor]]:
    """node -> its LoRA tensors under PEFT's keys, as CPU copies."""
    out = {}
    for node in nodes:
        state = peft.get_peft_model_state_dict(module, adapter_name=node)
        out[node] = {k: v.detach().to("cpu").clone() for k, v in state.items()}
    return out


def set_node_tensors(module: torch.nn.Module, nodes: Sequence[str],
                     tensors: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    """Copy the given nodes' tensors in; a node or key this model lacks is an error."""
    for node, state in tensors.items():
        if node not in nodes:
            raise ValueError(f"adapter for node {node!r}: this learner holds {list(nodes)}")
        result = peft.set_peft_model_state_dict(module, dict(state), adapter_name=node)
        missing = [k for k in getattr(result, "unexpected_keys", []) if f".{node}." in k or "lora_" in k]
        if missing:
            raise ValueError(f"node {node}: adapter keys not in the model: {missing[:3]}")


def node_spans(names: Sequence[str]) -> list[tuple[str, int, int]]:
    """(node, first row, end) of each run of equal names; rows must be grouped by node."""
    spans: list[tuple[str, int, int]] = []
    for i, name in enumerate(names):
        if spans and spans[-1][0] == name:
            spans[-1] = (name, spans[-1][1], i + 1)
        else:
            spans.append((name, i, i + 1))
    if len({n for n, _, _ in spans}) != len(spans):
        raise ValueError("rows_to_adapters needs the rows grouped by node")
    return spans


@contextmanager
def rows_to_adapters(module: torch.nn.Module, names: Sequence[str], extents: Sequence[int] | None = None,
                     dim: int = 0) -> Iterator[None]:
    """Run each row of the next forward through the adapter named for it; the rows come
    grouped by node, row i spanning ``extents[i]`` entries of the layers' inputs along
    ``dim`` (one along the batch dimension when padded, its tokens along the sequence when
    packed). Every LoRA layer computes its base output for the whole input at once (PEFT's
    ``adapter_names`` with the base model's name, ``__base__``), then adds each node's LoRA
    term computed on that node's contiguous block.
    tests/learner/test_update_equals_autograd.py checks the gradient against per-node
    passes and plain autograd."""
    spans = node_spans(names)
    extents = [1] * len(names) if extents is None else list(extents)
    sizes = [sum(extents[a:b]) for _, a, b in spans]

    def base_only(_layer: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "adapter_names": ["__base__"] * args[0].shape[0]}

    def add_lora(layer: Any, args: tuple, output: torch.Tensor) -> torch.Tensor:
        # split + cat, out of place: backward gets one full-size gradient for x, where
        # slicing or indexing per node would allocate one per node
        deltas = []
        for (node, _, _), x in zip(spans, torch.split(args[0], sizes, dim=dim)):
            if node not in layer.lora_A:
                deltas.append(torch.zeros(x.shape[:-1] + output.shape[-1:], dtype=output.dtype, device=x.device))
                continue
            lora_a = layer.lora_A[node]
            delta = layer.lora_B[node](lora_a(layer.lora_dropout[node](x.to(lora_a.weight.dtype))))
            deltas.append((delta * layer.scaling[node]).to(output.dtype))
        return output + torch.cat(deltas, dim=dim)

    layers = [m for m in module.modules() if isinstance(m, LoraLayer)]
    handles = [m.register_forward_pre_hook(base_only, with_kwargs=True) for m in layers]
    handles += [m.register_forward_hook(add_lora) for m in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
