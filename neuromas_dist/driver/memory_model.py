"""What one rollout worker and one learner rank hold on their GPU, from the architecture alone.

The model is instantiated on the meta device (no weights, no download) and read for the
shapes that decide memory. The learner's activations are not a rule of thumb: they are what
autograd keeps of the learner's own forward (``learner/rank.py``: frozen base in
``model.dtype``, LoRA on the target modules, the log-probabilities of ``learner.logits``),
read off the saved tensors of transformers' decoder layers:

* each RMSNorm keeps its input upcast to fp32 (4 h bytes a token); Qwen3's and Gemma3's
  per-head q/k norms keep theirs (4 (q + kv));
* SDPA keeps query, key, value and output, and a fp32 log-sum-exp per head. With a padding
  mask transformers repeats GQA keys and values to every head first (masked CUDA SDPA has no
  GQA), so a padded micro-batch keeps k and v at the query's width;
* the gated MLP keeps the activation's input and both factors of the product (3 I);
* a LoRA layer keeps its input (shared by q/k/v, and by gate/up) and its rank-r middle;
  a frozen Linear keeps nothing of its input (autograd saves only what a needed gradient uses).

The logits stage depends on ``learner.logits``. ``full`` holds, per row, the full logits
(the response positions' selection keeps them for its backward: ``nb s V``) and, at the
start of the backward, three fp32 ``[t, V]`` tensors (the saved log-softmax, its incoming
gradient and its input's gradient): ``12 t V``. With top-p < 1 the nucleus filter's sort,
softmax and cumsum peak higher in the forward: ``34 t V`` (measured on the CPU, fp32 and
bf16 alike, by the test below). ``response`` applies lm_head to the trained positions only:
the lm_head output is the fp32 log-softmax input or is freed once cast, so ``12 t V``
(``34``) is all. ``chunked`` keeps only each response token's gradient with respect to its
hidden state (``nb h``); one chunk of ``c`` tokens at a time holds the same ``12 c V``
(``34 c V``).

A pass is bounded by ``learner.micro_batch_size`` rows and ``max_tokens_per_micro_batch``
tokens: padded rows of ``max_model_len`` tokens, or packed tokens (a row over the budget runs
alone, so a pass holds at least one whole row).

tests/driver/test_memory_model.py holds this to peak CUDA memory measured on an H200 (16.8 GiB
at 8 x 768 tokens, 64.5 GiB at 32 x 768 for Qwen3-0.6B) and to allocator-level peaks it
measures on the CPU for small architectures (``benchmarks/learner_memory.py``). Not modelled:
the CUDA context and cuBLAS workspace (outside torch's allocator), the caching allocator's
slack between allocated and reserved, and transient buffers of a single kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AutoConfig, PretrainedConfig, Qwen3Config

from neuromas_dist.adapters.counting import arch_config, lora_linears, meta_model, vllm_rank_bucket
from neuromas_dist.config import Config, resolve_dtype
from neuromas_dist.models.tiny import MODEL_SHAPE, VOCAB_SIZE
from neuromas_dist.rollout.engine import lora_slots, max_nodes, most_new_tokens, on_gpu

GIB = 1024 ** 3
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Targets that read the same tensor: their LoRA layers keep one copy of it between them.
SHARED_INPUT = {"q_proj": "attention", "k_proj": "attention", "v_proj": "attention",
                "gate_proj": "mlp", "up_proj": "mlp"}


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
    heads: int
    q_dim: int  # heads x head_dim
    kv_dim: int  # kv_heads x head_dim
    intermediate: int
    norms: int  # hidden-size norms per decoder layer (2 in Qwen3/Llama, 4 in Gemma3)
    qk_norm: bool  # per-head q/k norms (Qwen3, Gemma3)
    lora_inputs: int  # features of the distinct inputs of one layer's LoRA targets
    lora_modules: int  # LoRA targets per layer


def model_arch(cfg: Config) -> PretrainedConfig:
    """The transformers config of ``cfg``'s model, without weights or download."""
    m = cfg.model
    if m.arch_config:
        return arch_config(m.arch_config)
    if m.name_or_path == "tiny":
        return Qwen3Config(vocab_size=VOCAB_SIZE, **MODEL_SHAPE)  # the tokenizer's size at most
    try:
        return AutoConfig.from_pretrained(m.name_or_path, local_files_only=True, trust_remote_code=m.trust_remote_code)
    except OSError:
        raise PlanError(f"model.name_or_path={m.name_or_path}: not a local model and not in the Hugging Face cache; "
                        f"set model.arch_config to its config.json to plan without a download") from None


def measure(cfg: Config) -> Arch:
    conf = model_arch(cfg)
    model = meta_model(conf)
    targets = set(cfg.lora.target_modules)
    per_rank = sum(m.in_features + m.out_features for _, m in lora_linears(model, targets))
    text = conf.get_text_config() if hasattr(conf, "get_text_config") else conf
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    layer = [(name.split(".layers.0.", 1)[1], m) for name, m in model.named_modules() if ".layers.0." in name]
    short = [(name.rsplit(".", 1)[-1], m) for name, m in layer]
    inputs = {SHARED_INPUT.get(n, n): m.in_features for n, m in short
              if n in targets and isinstance(m, torch.nn.Linear)}
    return Arch(params=sum(p.numel() for p in model.parameters()), lora_per_node=per_rank * cfg.lora.rank,
                lora_per_slot=per_rank * vllm_rank_bucket(cfg.lora.rank), layers=text.num_hidden_layers,
                hidden=text.hidden_size, kv_per_token=2 * text.num_hidden_layers * kv_heads * head_dim,
                vocab=text.vocab_size, heads=heads, q_dim=heads * head_dim, kv_dim=kv_heads * head_dim,
                intermediate=text.intermediate_size,
                norms=sum("Norm" in type(m).__name__ and n not in ("q_norm", "k_norm") for n, m in short),
                qk_norm=any(n == "q_norm" for n, _ in short), lora_inputs=sum(inputs.values()),
                lora_modules=sum(n in targets and isinstance(m, torch.nn.Linear) for n, m in short))


def layer_bytes_per_token(a: Arch, nb: int, lora_rank: int, padded: bool = True) -> int:
    """What autograd keeps of one decoder layer for one token (see the module doc)."""
    norms = 4 * a.hidden * a.norms + (4 * (a.q_dim + a.kv_dim) if a.qk_norm else 0)
    kv = a.q_dim if padded else a.kv_dim
    attention = nb * (2 * a.q_dim + 2 * kv) + 4 * a.heads
    mlp = 3 * nb * a.intermediate
    lora = nb * (a.lora_inputs + a.lora_modules * lora_rank)
    return norms + attention + mlp + lora


def logits_bytes(a: Arch, nb: int, mode: str, tokens: int, response: int, top_p: float, chunk: int) -> int:
    """The logits stage's peak for a pass of ``tokens`` tokens, ``response`` of them trained."""
    nucleus = 34 if top_p < 1.0 else 12
    if mode == "full":
        return nb * tokens * a.vocab + nucleus * response * a.vocab
    if mode == "response":
        return nucleus * response * a.vocab
    return nb * response * a.hidden + nucleus * min(chunk, response) * a.vocab


def pass_shape(cfg: Config, packed: bool) -> tuple[int, int, int]:
    """(rows, tokens, trained tokens) of the largest pass the learner runs: rows of
    ``max_model_len`` tokens, ``max_new_tokens`` of them trained, within both bounds."""
    lc = cfg.learner
    b, budget = lc.micro_batch_size, lc.max_tokens_per_micro_batch
    s, t = cfg.model.max_model_len, min(most_new_tokens(cfg), cfg.model.max_model_len)
    if budget and packed:
        tokens = min(b * s, max(budget, s))
        return -(-tokens // s), tokens, min(b * t, tokens)
    rows = min(b, max(1, budget // s)) if budget else b
    return rows, rows * s, rows * t


def rollout_memory(cfg: Config, a: Arch) -> dict[str, float]:

    nb = DTYPE_BYTES[resolve_dtype(cfg.model.dtype, on_gpu(cfg))]
    out: dict[str, float] = {"weights": a.params * nb, "lora_slots": lora_slots(cfg) * a.lora_per_slot * nb}
    if cfg.resources.rollout_gpus > 0:
        # vLLM's share is of the whole device: a colocated worker's fractional GPU does not shrink it
        gpus = 1.0 if cfg.resources.colocate else cfg.resources.rollout_gpus
        budget = cfg.rollout.gpu_memory_utilization * cfg.resources.gpu_memory_gb * GIB * gpus
        out["kv_cache"] = max(budget - out["weights"] - out["lora_slots"], 0.0)
    else:
        out["kv_cache"] = cfg.rollout.kv_cache_gb * GIB
    out["kv_tokens"] = out["kv_cache"] / (a.kv_per_token * nb)
    return out


def learner_memory(cfg: Config, a: Arch, padded: bool | None = None) -> dict[str, float]:
    """A rank's peak, by part: weights, adapters (LoRA weights in ``model.dtype``), optimizer
    (DeepSpeed's fp32 master copy for bf16, AdamW's two moments; partitioned over ranks from
    ZeRO 1), gradients (the rank's fp32 step buffers, two for a baseline fixed at the step's
    end, DeepSpeed's, partitioned from ZeRO 2, and ZeRO's reduce bucket, sized to the
    adapters by ``learner.model.ds_config``), activations and logits of the largest pass
    (``pass_shape``). ``padded``: rows of different lengths under a padding mask (the usual
    case unless ``learner.padding_free=on``; ``auto`` packs only where varlen attention is
    installed, which a plan made elsewhere cannot see); False for rows of one length."""

    lc = cfg.learner
    packed = lc.padding_free == "on"
    padded = not packed if padded is None else padded
    nb, ranks = DTYPE_BYTES[resolve_dtype(cfg.model.dtype, cfg.resources.learner_gpus > 0)], lc.num_ranks
    trainable = max_nodes(cfg) * a.lora_per_node
    master = 4 if nb < 4 else 0
    buffers = 2 if lc.baseline != "loo" else 1
    rows, tokens, trained = pass_shape(cfg, packed)
    s = cfg.model.max_model_len
    return {"weights": a.params * nb, "adapters": trainable * nb,
            "optimizer": trainable * (master + 8) / (ranks if lc.zero_stage >= 1 else 1),
            "gradients": trainable * (4 * buffers + nb / (ranks if lc.zero_stage >= 2 else 1))
            + (trainable * (4 if lc.zero_stage == 1 else nb) if lc.zero_stage >= 1 else 0),  # ZeRO's reduce bucket
            "activations": tokens * a.layers * layer_bytes_per_token(a, nb, cfg.lora.rank, padded)
            + (rows * s * s if padded else 0),  # the boolean padding mask, shared by the layers
            "logits": logits_bytes(a, nb, lc.logits, tokens, trained, cfg.sampling.top_p, lc.logprob_chunk_tokens)}
