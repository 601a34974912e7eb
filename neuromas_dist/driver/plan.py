"""``python -m neuromas_dist.launch --plan``: what a config asks of a cluster, before anything starts.

Nothing is loaded but the model's architecture, instantiated on the meta device (no
weights, no download). Every figure is an estimate, and says how it is made:

* rollout worker (one vLLM engine): weights ``P x bytes``; LoRA slots ``max_loras
  x A_r x bytes`` (``rollout.max_loras``, default the nodes) with ``A_r`` one adapter at vLLM's rank bucket; the KV cache gets what
  ``rollout.gpu_memory_utilization`` leaves of the GPU (vLLM's own rule, less its
  activation reserve, which is not modelled), in tokens of ``2 x layers x kv_heads x
  head_dim x bytes`` each.
* learner rank: weights ``P x bytes``; adapters ``nodes x A x bytes``; DeepSpeed's fp32
  master copy (bf16 only) and AdamW moments, partitioned over ranks from ZeRO stage 1;
  the step's own fp32 gradient buffers (two for a baseline that needs the whole step);
  activations of one micro-batch of ``max_model_len`` tokens: ``34 x s x b x h`` bytes per
  layer (Korthikanti et al. 2022, no recomputation, fused attention), the logits of every
  position ``b x s x vocab x bytes``, and the response positions' fp32 logits and
  log-softmax, ``2 x b x max_new_tokens x vocab x 4``.
* an adapter sync moves ``nodes x A x bytes``; a full-weight sync would move ``P x bytes``.

The fit check compares each actor with its share of one GPU (``resources.gpu_memory_gb``
times its ``*_gpus``; a colocated pair shares one GPU) and fails with one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neuromas_dist.config import Config, resolve_dtype

GIB = 1024 ** 3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class PlanError(ValueError):
    """The config cannot run on the cluster it describes (or cannot be planned here)."""


@dataclass(frozen=True)
class Arch:
    params: int  # base model parameters
    lora_per_node: int  # one adapter at lora.rank
    lora_per_slot: int  # one adapter at vLLM's max_lora_rank bucket
    layers: int
    hidden: int
    kv_per_token: int  # K and V elements per token over all layers
    vocab: int


def model_arch(cfg: Config) -> Any:
    """The transformers config of ``cfg``'s model, without weights or download."""
    from transformers import AutoConfig

    m = cfg.model
    if m.arch_config:
        from neuromas_dist.adapters.counting import arch_config

        return arch_config(m.arch_config)
    if m.name_or_path == "tiny":
        from transformers import Qwen3Config

        from neuromas_dist.models.tiny import MODEL_SHAPE

        return Qwen3Config(vocab_size=300, **MODEL_SHAPE)  # the tokenizer has ~292 tokens
    try:
        return AutoConfig.from_pretrained(m.name_or_path, local_files_only=True, trust_remote_code=m.trust_remote_code)
    except OSError:
        raise PlanError(f"model.name_or_path={m.name_or_path}: not a local model and not in the Hugging Face cache; "
                        f"set model.arch_config to its config.json to plan without a download") from None


def measure(cfg: Config) -> Arch:
    import torch
    from transformers import AutoModelForCausalLM

    from neuromas_dist.rollout.engine import _lora_rank_bucket

    conf = model_arch(cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(conf)
    targets = set(cfg.lora.target_modules)
    per_rank = sum(m.in_features + m.out_features for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets)
    text = conf.get_text_config() if hasattr(conf, "get_text_config") else conf
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return Arch(params=sum(p.numel() for p in model.parameters()), lora_per_node=per_rank * cfg.lora.rank,
                lora_per_slot=per_rank * _lora_rank_bucket(cfg.lora.rank), layers=text.num_hidden_layers,
                hidden=text.hidden_size, kv_per_token=2 * text.num_hidden_layers * kv_heads * head_dim,
                vocab=text.vocab_size)


def rollout_memory(cfg: Config, a: Arch) -> dict[str, float]:
    from neuromas_dist.rollout.engine import lora_slots, on_gpu

    nb = DTYPE_BYTES[resolve_dtype(cfg.model.dtype, on_gpu(cfg))]
    out = {"weights": a.params * nb, "lora_slots": lora_slots(cfg) * a.lora_per_slot * nb}
    if cfg.resources.rollout_gpus > 0:
        budget = cfg.rollout.gpu_memory_utilization * cfg.resources.gpu_memory_gb * GIB * cfg.resources.rollout_gpus
        out["kv_cache"] = max(budget - out["weights"] - out["lora_slots"], 0.0)
    else:
        out["kv_cache"] = cfg.rollout.kv_cache_gb * GIB
    out["kv_tokens"] = out["kv_cache"] / (a.kv_per_token * nb)
    return out


def learner_memory(cfg: Config, a: Arch) -> dict[str, float]:
    gpu = cfg.resources.learner_gpus > 0
    nb, ranks, lc = DTYPE_BYTES[resolve_dtype(cfg.model.dtype, gpu)], cfg.learner.num_ranks, cfg.learner
    from neuromas_dist.rollout.engine import max_nodes

    trainable = max_nodes(cfg) * a.lora_per_node
    shard = ranks if lc.zero_stage >= 1 else 1
    master = 4 if nb < 4 else 0  # DeepSpeed's fp32 copy of bf16/fp16 trainable weights
    buffers = 2 if lc.baseline != "loo" else 1  # G_known (+ G_one for a baseline fixed at the step's end)
    b, s = lc.micro_batch_size, cfg.model.max_model_len
    return {"weights": a.params * nb, "adapters": trainable * nb,
            "optimizer": trainable * (master + 8) / shard,
            "gradients": trainable * (4 * buffers + nb / (ranks if lc.zero_stage >= 2 else 1)),
            "activations": 34 * s * b * a.hidden * a.layers * nb / 2 + b * s * a.vocab * nb
            + 2 * b * cfg.sampling.max_new_tokens * a.vocab * 4}


def placement_lines(cfg: Config) -> list[str]:
    from neuromas_dist.driver.placement import bundles, rollout_bundle_index

    r = cfg.resources
    owners: dict[int, list[str]] = {}
    for k in range(cfg.learner.num_ranks):
        owners.setdefault(k, []).append(f"learner rank {k}")
    for w in range(cfg.rollout.num_workers):
        owners.setdefault(rollout_bundle_index(cfg, w), []).append(f"rollout worker {w}")
    lines = []
    for i, bundle in enumerate(bundles(cfg)):
        kinds = [k for k in (r.learner_node_resource, r.rollout_node_resource) if k in bundle]
        node = f"a node offering {kinds[0]}" if kinds else "any node"
        lines.append(f"  bundle {i}: {bundle} -> {' + '.join(owners[i])} on {node}")
    return lines


def make_plan(cfg: Config) -> tuple[str, dict[str, Any]]:
    """(the printed plan, its numbers). Raises PlanError when an actor does not fit its GPU share."""
    a = measure(cfg)
    roll, learn = rollout_memory(cfg, a), learner_memory(cfg, a)
    r = cfg.resources
    from neuromas_dist.rollout.engine import max_nodes

    nodes = max_nodes(cfg)
    adapter_bytes = nodes * a.lora_per_node * (2 if r.learner_gpus > 0 else 4)
    full_bytes = a.params * (2 if r.learner_gpus > 0 else 4)
    numbers = {"params": a.params, "lora_per_node": a.lora_per_node, "rollout": roll, "learner": learn,
               "sync_bytes": adapter_bytes, "full_sync_bytes": full_bytes}
    gb = lambda x: f"{x / GIB:.2f} GiB"  # noqa: E731
    lines = [f"model {cfg.model.name_or_path}: {a.params / 1e6:.1f}M parameters; {nodes} nodes x "
             f"{a.lora_per_node / 1e6:.2f}M LoRA parameters (rank {cfg.lora.rank})",
             "placement (one placement group, strategy " + r.placement_strategy + "):", *placement_lines(cfg),
             f"rollout worker x {cfg.rollout.num_workers}: weights {gb(roll['weights'])}, LoRA slots "
             f"{gb(roll['lora_slots'])}, KV cache {gb(roll['kv_cache'])} = {roll['kv_tokens']:,.0f} tokens "
             f"({roll['kv_tokens'] / cfg.model.max_model_len:.1f} sequences of max_model_len)",
             f"learner rank x {cfg.learner.num_ranks} (ZeRO {cfg.learner.zero_stage}): " +
             ", ".join(f"{k} {gb(v)}" for k, v in learn.items()) + f"; total {gb(sum(learn.values()))}",
             f"adapter sync: {adapter_bytes / 1e6:.1f} MB per version vs {full_bytes / 1e6:.1f} MB for a full-weight "
             f"sync ({full_bytes / adapter_bytes:.0f}x less)"]
    _check_fit(cfg, roll, learn)
    return "\n".join(lines), numbers


def _check_fit(cfg: Config, roll: dict[str, float], learn: dict[str, float]) -> None:
    r = cfg.resources
    if roll["kv_tokens"] < cfg.model.max_model_len:
        raise PlanError(f"a rollout worker's KV cache holds {roll['kv_tokens']:,.0f} tokens, less than one sequence of "
                        f"model.max_model_len={cfg.model.max_model_len}: vLLM would refuse to start "
                        f"(raise resources.rollout_gpus, rollout.gpu_memory_utilization or resources.gpu_memory_gb)")
    if r.learner_gpus <= 0:
        return
    have = r.gpu_memory_gb * GIB * r.learner_gpus
    need = sum(learn.values())
    if r.colocate:  # vLLM takes its utilisation share of the GPU first
        have = r.gpu_memory_gb * GIB * (1 - cfg.rollout.gpu_memory_utilization)
    if need > have:
        raise PlanError(f"a learner rank needs about {need / GIB:.1f} GiB but gets {have / GIB:.1f} GiB of a "
                        f"{r.gpu_memory_gb:g} GiB GPU (resources.gpu_memory_gb): lower learner.micro_batch_size or "
                        f"model.max_model_len, raise learner.zero_stage or learner.num_ranks")


def print_plan(cfg: Config) -> int:
    try:
        text, _ = make_plan(cfg)
    except PlanError as exc:
        print(f"plan error: {exc}", flush=True)
        return 2
    print(text, flush=True)
    return 0

