"""``python -m neuromas_dist.launch --plan``: what a config asks of a cluster, before anything starts.

Nothing is loaded but the model's architecture, instantiated on the meta device (no
weights, no download). Every figure is an estimate, and says how it is made:

* rollout worker (one vLLM engine): weights ``P x bytes``; LoRA slots ``max_loras
  x A_r x bytes`` (``rollout.max_loras``, default the nodes) with ``A_r`` one adapter at
  vLLM's rank bucket; the KV cache gets what ``rollout.gpu_memory_utilization`` leaves of the
  GPU (vLLM's own rule, less its activation reserve, which is not modelled), in tokens of
  ``2 x layers x kv_heads x head_dim x bytes`` each.
* learner rank: weights, adapters, optimizer and gradient buffers, and the activations and
  logits of one micro-batch of full-length rows, from what autograd keeps of the learner's
  forward (``driver/memory_model.py``, held to H200 and CPU measurements by its test). The
  fit check adds an allowance for the CUDA context, which torch's allocator does not see.
* an adapter sync moves ``nodes x A x bytes``; a full-weight sync would move ``P x bytes``.

The fit check compares each actor with its share of one GPU (``resources.gpu_memory_gb``
times its ``*_gpus``; a colocated pair shares one GPU) and fails with one line.
"""

from __future__ import annotations

from typing import Any

from neuromas_dist.config import Config
from neuromas_dist.driver.memory_model import GIB, PlanError, learner_memory, measure, pass_shape, rollout_memory
from neuromas_dist.driver.placement import bundles, rollout_bundle_index
from neuromas_dist.rollout.engine import calls_per_sample, max_nodes, most_new_tokens

__all__ = ["GIB", "PlanError", "make_plan", "measure", "print_plan"]

# Outside torch's allocator (CUDA context, cuBLAS/NCCL workspaces): an allowance, not a measurement.
CUDA_CONTEXT_BYTES = 1 * GIB


def placement_lines(cfg: Config) -> list[str]:
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
    nodes = max_nodes(cfg)
    adapter_bytes = nodes * a.lora_per_node * (2 if r.learner_gpus > 0 else 4)
    full_bytes = a.params * (2 if r.learner_gpus > 0 else 4)
    numbers = {"params": a.params, "lora_per_node": a.lora_per_node, "rollout": roll, "learner": learn,
               "sync_bytes": adapter_bytes, "full_sync_bytes": full_bytes}
    gb = lambda x: f"{x / GIB:.2f} GiB"  # noqa: E731
    pass_rows, pass_tokens, _ = pass_shape(cfg, cfg.learner.padding_free == "on")
    t = cfg.trainer
    lines = [f"model {cfg.model.name_or_path}: {a.params / 1e6:.1f}M parameters; {nodes} "
             f"{'agents' if cfg.program.entry else 'nodes'} x {a.lora_per_node / 1e6:.2f}M LoRA parameters "
             f"(rank {cfg.lora.rank})",
             f"rollout of a step: {t.questions_per_step} questions x {cfg.sampling.n_samples} samples x at most "
             f"{calls_per_sample(cfg)} calls = "
             f"{t.questions_per_step * cfg.sampling.n_samples * calls_per_sample(cfg):,} "
             f"rows of at most {most_new_tokens(cfg)} new tokens"
             + (f" (program.max_calls; {cfg.program.timeout_s:g} s per run)" if cfg.program.entry else ""),
             "placement (one placement group, strategy " + r.placement_strategy + "):", *placement_lines(cfg),
             f"rollout worker x {cfg.rollout.num_workers}: weights {gb(roll['weights'])}, LoRA slots "
             f"{gb(roll['lora_slots'])}, KV cache {gb(roll['kv_cache'])} = {roll['kv_tokens']:,.0f} tokens "
             f"({roll['kv_tokens'] / cfg.model.max_model_len:.1f} sequences of max_model_len)",
             f"learner rank x {cfg.learner.num_ranks} (ZeRO {cfg.learner.zero_stage}): " +
             ", ".join(f"{k} {gb(v)}" for k, v in learn.items()) + f"; peak {gb(sum(learn.values()))} "
             f"for passes of {pass_rows} rows x {cfg.model.max_model_len} tokens ({pass_tokens:,} tokens, "
             f"logits={cfg.learner.logits}; activations and logits: what autograd keeps of the learner's forward, "
             f"checked against CPU allocator peaks and, for logits=full, peak CUDA memory on an H200, within 2%; "
             f"not measured: the CUDA context, "
             f"for which the fit check sets aside {gb(CUDA_CONTEXT_BYTES)})",
             f"adapter sync: {adapter_bytes / 1e6:.1f} MB per version vs {full_bytes / 1e6:.1f} MB for a full-weight "
             f"sync ({full_bytes / adapter_bytes:.0f}x less)"]
    work, numbers["learner_passes"] = learner_work(cfg)
    lines.append(work)
    lines.append(_check_fit(cfg, roll, learn))
    return "\n".join(lines), numbers


def learner_work(cfg: Config) -> tuple[str, dict[str, int]]:
    """(the plan's line, the counts) of the learner's passes over a step's rows: the
    objective's forward/backward passes, the no-grad ones, the optimiser steps."""
    lc, t = cfg.learner, cfg.trainer
    ppo = lc.objective == "ppo_clip"
    counts = {"grad_passes": lc.epochs if ppo else 1, "no_grad_passes": int(ppo) + int(lc.kl_coef > 0),
              "optimizer_steps": lc.epochs * lc.mini_batches if ppo else 1}
    kept = t.questions_per_step * cfg.sampling.n_samples * calls_per_sample(cfg) * most_new_tokens(cfg)
    extra = []
    if ppo:
        extra.append("a no-grad pass for the starting logprobs")
    if lc.kl_coef > 0:
        extra.append("a no-grad pass with the adapters off for the base model's (no second model in memory)")
    held = (f"; it holds {(1 + (lc.kl_coef > 0)) * 4 * kept / 2 ** 20:.1f} MiB of logprobs at most between "
            f"them" if ppo else "")
    line = (f"learner work of a step ({lc.objective}): {counts['grad_passes']} forward/backward pass(es) over the "
            f"step's rows" + (f", {' and '.join(extra)}" if extra else "") + f"; {counts['optimizer_steps']} "
            f"optimiser step(s){held}")
    return line, counts


def _check_fit(cfg: Config, roll: dict[str, float], learn: dict[str, float]) -> str:
    """The fit line of the plan; raises PlanError (one line) when an actor does not fit."""
    r = cfg.resources
    if roll["kv_tokens"] < cfg.model.max_model_len:
        raise PlanError(f"a rollout worker's KV cache holds {roll['kv_tokens']:,.0f} tokens, less than one sequence of "
                        f"model.max_model_len={cfg.model.max_model_len}: vLLM would refuse to start "
                        f"(raise resources.rollout_gpus, rollout.gpu_memory_utilization or resources.gpu_memory_gb)")
    if r.learner_gpus <= 0:
        return "fit: CPU run (resources.*_gpus = 0), nothing to check against a GPU"
    have = r.gpu_memory_gb * GIB * r.learner_gpus
    need = sum(learn.values()) + CUDA_CONTEXT_BYTES
    if r.colocate:  # vLLM takes its utilisation share of the GPU first
        have = r.gpu_memory_gb * GIB * (1 - cfg.rollout.gpu_memory_utilization)
    if need > have:
        raise PlanError(f"a learner rank needs about {need / GIB:.1f} GiB but gets {have / GIB:.1f} GiB of a "
                        f"{r.gpu_memory_gb:g} GiB GPU (resources.gpu_memory_gb): lower "
                        f"learner.max_tokens_per_micro_batch, learner.micro_batch_size or model.max_model_len, raise "
                        f"learner.zero_stage or learner.num_ranks")
    share = "shared with vLLM" if r.colocate else f"{r.learner_gpus:g} GPU"
    return (f"fit: a learner rank needs {need / GIB:.1f} GiB of the {have / GIB:.1f} GiB it gets ({share} of "
            f"{r.gpu_memory_gb:g} GiB); fits")


def print_plan(cfg: Config) -> int:
    try:
        text, _ = make_plan(cfg)
    except PlanError as exc:
        print(f"plan error: {exc}", flush=True)
        return 2
    print(text, flush=True)
    return 0
