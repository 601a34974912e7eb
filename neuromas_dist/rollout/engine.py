"""Building one vLLM async engine for a rollout worker from the run config.

The engine holds the frozen base model once and serves every node's LoRA adapter from
it, so ``max_loras`` must cover all nodes that can be in one batch. Sizing differs by
device: on a GPU vLLM takes a share of GPU memory; on the CPU the KV cache is a fixed
number of bytes (several workers and the learner share the host's RAM).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import psutil

from neuromas_dist.adapters.counting import vllm_rank_bucket
from neuromas_dist.config import Config, resolve_dtype

GIB = 1 << 30

# The learner recomputes log_softmax(logits / temperature) (after top-p when it is
# below 1): "processed" logprobs are exactly that, "raw" ones ignore the temperature.
LOGPROBS_MODE = "processed_logprobs"
CPU_BATCHED_TOKENS = 32768  # prefill tokens per engine step on CPU
_MULTIPROCESSING = "VLLM_ENABLE_V1_MULTIPROCESSING"


def max_nodes(cfg: Config) -> int:
    """Most agents (adapters) of this run: a program's, or the most nodes any topology of
    this run has (the start or any growth stage)."""
    if cfg.program.entry:
        return len(cfg.program.agents)
    widths = [cfg.topology.widths, *(stage.widths for stage in cfg.trainer.growth)]
    return max(sum(w) for w in widths)


def most_new_tokens(cfg: Config) -> int:
    """The longest response any call of this run may sample (a node or agent may override it)."""
    overrides = (*cfg.sampling.per_node, *cfg.program.sampling)
    return max([cfg.sampling.max_new_tokens, *(s.max_new_tokens for s in overrides)])


def calls_per_sample(cfg: Config) -> int:
    """Most calls (trajectory rows) one sample makes: a graph's nodes, a program's ``max_calls``."""
    return cfg.program.max_calls if cfg.program.entry else max_nodes(cfg)


def lora_slots(cfg: Config) -> int:
    """vLLM's ``max_loras``: every node by default, so one batch can serve the whole graph."""
    return cfg.rollout.max_loras or max_nodes(cfg)


def on_gpu(cfg: Config) -> bool:
    return cfg.resources.rollout_gpus > 0


def engine_kwargs(cfg: Config, model_dir: str, *, seed: int = 0) -> dict[str, Any]:
    """Keyword arguments of ``AsyncEngineArgs`` for one worker (pure, testable)."""
    nodes = max_nodes(cfg)
    kwargs: dict[str, Any] = dict(
        model=str(model_dir),
        tokenizer=str(model_dir),
        trust_remote_code=cfg.model.trust_remote_code,
        dtype=resolve_dtype(cfg.model.dtype, on_gpu(cfg)),
        max_model_len=cfg.model.max_model_len,
        enable_lora=True,
        max_loras=lora_slots(cfg),
        # Two versions coexist while the old one drains after a hot swap (of every slot, when a
        # config asks for more slots than this run has nodes: an engine sized for several runs).
        max_cpu_loras=2 * max(nodes, lora_slots(cfg)) + 1,
        max_lora_rank=vllm_rank_bucket(cfg.lora.rank),
        max_num_seqs=cfg.rollout.max_num_seqs,
        enforce_eager=cfg.rollout.enforce_eager,
        logprobs_mode=LOGPROBS_MODE,
        seed=seed,
        disable_log_stats=True,
    )
    if on_gpu(cfg):
        kwargs["gpu_memory_utilization"] = cfg.rollout.gpu_memory_utilization
        return kwargs
    if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        # The env var, when set, wins inside vLLM's CPU platform; only size when it is not.
        kwargs["kv_cache_memory_bytes"] = int(cfg.rollout.kv_cache_gb * GIB)
    # vLLM 0.32 on CPU kills the engine ("CPU Generator does not use offset") when a
    # seeded request is prefilled in chunks; whole-prompt prefill avoids that path.
    kwargs["enable_chunked_prefill"] = False
    kwargs["max_num_batched_tokens"] = max(cfg.model.max_model_len, CPU_BATCHED_TOKENS)
    # The model runs inside the engine core process, not in a worker process of its own:
    # one process fewer to spawn and import vLLM into (~12 s each on 2 cores) and to wait
    # for at shutdown. A launch's rows were the same bit for bit; the engine steps sooner, so a
    # request may share late decode steps with other company (logprobs move ~1e-6, tokens not).
    kwargs["distributed_executor_backend"] = "uni"
    return kwargs


def child_pids() -> list[int]:
    """Every process below this one: a worker's vLLM EngineCore (and its workers on a GPU)."""
    return [c.pid for c in psutil.Process().children(recursive=True)]


def kill_pids(pids: list[int]) -> int:
    """SIGKILL ``pids`` (those already gone are skipped); returns how many were signalled."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def build_engine(cfg: Config, model_dir: str, *, seed: int = 0) -> Any:
    """Start an ``AsyncLLM`` (its engine core runs in a child process)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(**engine_kwargs(cfg, model_dir, seed=seed))
    if on_gpu(cfg):
        return AsyncLLM.from_engine_args(args)
    # vLLM's CPU platform turns "uni" back into "mp" unless this variable reads 0 while
    # the config is built. AsyncLLM still runs its engine core in a child process
    # whatever it says; only the sync ``LLM`` reads it later, so it is set for this call
    # alone rather than left behind for the caller's process.
    previous = os.environ.get(_MULTIPROCESSING)
    os.environ[_MULTIPROCESSING] = "0"
    try:
        return AsyncLLM.from_engine_args(args)
    finally:
        if previous is None:
            del os.environ[_MULTIPROCESSING]
        else:
            os.environ[_MULTIPROCESSING] = previous
