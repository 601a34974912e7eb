"""`python -m benchmarks.balance`: rollout against learner, on the same trajectories.

On the embedded default config (tiny Qwen3, [2, 1] graph, 16 questions x 8 samples per
step), four measurements, each on the real stack:

1. **Phases apart** (in-process ``Trainer``, real Ray actors): each step's rollout runs
   alone, then the learner consumes exactly those trajectories alone, then the adapters
   are broadcast. Gives rollout tokens/s per worker (generated tokens), learner tokens/s
   per rank (prompt + response tokens through forward and backward), and the worker:rank
   ratio that would balance them. Once with 1 and once with 2 rollout workers.
2. **The system's own step**: ``python -m neuromas_dist.launch`` in sync and in async mode.
   Sync streams trajectories into the learner while sampling goes on, so its step is
   compared with rollout + learn + sync of (1); async overlaps the next rollout with the
   update, so its step is compared with max(rollout, learn) of (1) (target <= 1.15x).
3. **Adapter sync vs full-weight sync** through Ray's object store (put once, fetched by
   one task per rollout worker): the tiny model's real adapters and weights, and blobs of
   the byte counts ``launch --plan`` gives for the paper's Qwen3-0.6B config.
4. **Engine layouts**, one vLLM process each, the same graph rollout: every node's
   adapter resident in one engine (ours), one resident adapter swapped per node
   (``rollout.max_loras=1``, as verl and ROLL run LoRA), and one engine per node (as MARTI
   gives each agent its own model); generated tokens/s and the engines' resident memory.

Medians over steps, the first step of each run left out (allocations, first compiles).
Writes ``benchmarks/results/balance.json`` and ``balance.png``. About 15 min here.

    python -m benchmarks.balance [--steps 6] [--layout-repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "benchmarks" / "results" / "balance.json"
ASYNC_TARGET = 1.15


def overrides(steps: int) -> list[str]:
    # The default config; no intermediate evaluation or final report (not part of a step).
    return [f"trainer.steps={steps}", "trainer.eval_every=0", "trainer.final_ablation=false",
            "trainer.checkpoint_every=0", "logging.progress=false", "logging.plots=false"]


def median_after_first(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows[1:])


# ----------------------------------------------------------------- 1. phases apart

def phases_apart(steps: int, workers: int) -> dict[str, Any]:
    """Rollout alone, then learning on its trajectories alone, then the broadcast, per step."""
    import ray

    from neuromas_dist.config import load_config
    from neuromas_dist.driver.cluster import init_ray
    from neuromas_dist.driver.trainer import Trainer
    from neuromas_dist.rollout.worker import resolve_model_dir
    from neuromas_dist.tasks.data import load_task_data

    cfg = load_config(None, [*overrides(steps), f"rollout.num_workers={workers}", "logging.tensorboard=false",
                             "logging.save_trajectories=false"])
    run_dir = Path(tempfile.mkdtemp(prefix="balance_"))
    init_ray(cfg)
    trainer = Trainer(cfg, run_dir, resolve_model_dir(cfg), load_task_data(cfg.data), say=lambda _: None)
    try:
        trainer.start()
        rows = [_one_step_apart(trainer, step) for step in range(1, steps + 1)]
        transfer = sync_transfer(trainer) if workers == 1 else None
    finally:
        trainer.shutdown()
        ray.shutdown()
    rollout_s, learn_s = median_after_first(rows, "rollout_s"), median_after_first(rows, "learn_s")
    out = {"workers": workers, "steps": rows, "rollout_s": rollout_s, "learn_s": learn_s,
           "sync_s": median_after_first(rows, "sync_s"),
           "rollout_tokens_per_s_per_worker": median_after_first(rows, "response_tokens") / rollout_s / workers,
           "learner_tokens_per_s_per_rank": median_after_first(rows, "learner_tokens") / learn_s,
           "workers_per_rank_to_balance": statistics.median(r["rollout_s"] * workers / r["learn_s"] for r in rows[1:])}
    if transfer is not None:
        out["transfer"] = transfer
    return out


def _one_step_apart(trainer: Any, step: int) -> dict[str, float]:
    m = trainer.train_step(apart=True).metrics
    assert trainer.step == step
    return {"rollout_s": m["timing_s/rollout"], "learn_s": m["timing_s/learn_tail"], "sync_s": m["timing_s/sync"],
            "response_tokens": m["rollout/response_tokens"], "learner_tokens": m["learner/tokens"],
            "adapter_bytes": m["adapters/bytes"]}


# ----------------------------------------------------------------- 3. what a sync moves

def sync_transfer(trainer: Any, repeats: int = 3) -> dict[str, Any]:
    """Seconds to put an object in the object store once and fetch it in one task per
    rollout worker: the tiny model's adapters and full weights as they are, and blobs of
    the paper config's adapter and weight bytes (from ``launch --plan``)."""
    import numpy as np
    from safetensors.numpy import load_file

    from neuromas_dist.config import load_config
    from neuromas_dist.driver.plan import make_plan

    adapters = trainer.learner.adapters()
    weights = {}
    for path in sorted(Path(trainer.model_dir).glob("*.safetensors")):
        weights.update(load_file(str(path)))
    _, paper = make_plan(load_config(REPO / "configs" / "neuromas3_qwen3-0.6b_gsm8k.yaml"))
    objects = {"tiny_adapters": adapters, "tiny_full_weights": weights,
               "paper_adapters": np.ones(int(paper["sync_bytes"]), np.uint8),
               "paper_full_weights": np.ones(int(paper["full_sync_bytes"]), np.uint8)}
    sizes = {"tiny_adapters": adapters.nbytes(), "tiny_full_weights": sum(a.nbytes for a in weights.values()),
             "paper_adapters": int(paper["sync_bytes"]), "paper_full_weights": int(paper["full_sync_bytes"])}
    seconds = {name: statistics.median(_put_and_fetch(obj, trainer) for _ in range(repeats))
               for name, obj in objects.items()}
    return {"bytes": sizes, "seconds": seconds,
            "tiny_bytes_ratio": sizes["tiny_full_weights"] / sizes["tiny_adapters"],
            "paper_bytes_ratio": sizes["paper_full_weights"] / sizes["paper_adapters"],
            "tiny_seconds_ratio": seconds["tiny_full_weights"] / seconds["tiny_adapters"],
            "paper_seconds_ratio": seconds["paper_full_weights"] / seconds["paper_adapters"]}


def _put_and_fetch(obj: Any, trainer: Any) -> float:
    import ray

    @ray.remote(num_cpus=0)
    def fetch(x: Any) -> int:
        return len(x) if isinstance(x, (dict, list)) else 1

    strategies = trainer.placement.rollout_strategies()  # on the rollout workers' nodes
    t0 = time.perf_counter()
    ref = ray.put(obj)
    ray.get([fetch.options(scheduling_strategy=s).remote(ref) for s in strategies])
    seconds = time.perf_counter() - t0
    del ref
    return seconds


# ----------------------------------------------------------------- 2. the system's own step

def system_step(mode: str, steps: int, root: Path) -> dict[str, Any]:
    from neuromas_dist.testing.faults import launch

    run_dir = root / mode
    shutil.rmtree(run_dir, ignore_errors=True)  # the launcher refuses a directory holding an earlier run
    proc = launch("--run-dir", str(run_dir), *overrides(steps), f"trainer.mode={mode}", cwd=REPO,
                  log=root / f"{mode}.log")
    if proc.wait(timeout=3600) != 0:
        raise SystemExit(f"the {mode} run failed: see {root / f'{mode}.log'}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "timing_s/step_interval" in r]
    # The interval between step ends, not timing_s/step: an async step's rollout started
    # during the step before.
    return {"mode": mode, "step_s": median_after_first(rows, "timing_s/step_interval"),
            "rollout_s": median_after_first(rows, "timing_s/rollout"),
            "learn_tail_s": median_after_first(rows, "timing_s/learn_tail"),
            "sync_s": median_after_first(rows, "timing_s/sync"),
            "step_interval_s": [r["timing_s/step_interval"] for r in rows]}


# ----------------------------------------------------------------- 4. engine layouts

LAYOUTS = {
    "one_engine_all_adapters": "ours: one engine, every node's adapter resident (max_loras = nodes)",
    "one_engine_swap_per_node": "verl / ROLL: one engine, one resident adapter (max_loras = 1)",
    "one_engine_per_node": "MARTI: one engine per node, each with its node's adapter",
}


class EnginePerNode:
    """One engine per node behind the ``AsyncLLM`` calls the worker makes: a request goes
    to the engine of the node whose adapter it names (LoRA names are ``node@vVERSION``)."""

    def __init__(self, engines: dict[str, Any]):
        self.engines = engines
        self._node_of: dict[int, str] = {}

    @staticmethod
    def _node(request: Any) -> str:
        return request.lora_name.split("@")[0]

    async def add_lora(self, request: Any) -> bool:
        self._node_of[request.lora_int_id] = self._node(request)
        return await self.engines[self._node(request)].add_lora(request)

    async def remove_lora(self, lora_id: int) -> bool:
        return await self.engines[self._node_of.pop(lora_id)].remove_lora(lora_id)

    def generate(self, prompt: Any, params: Any, request_id: str, lora_request: Any = None) -> Any:
        return self.engines[self._node(lora_request)].generate(prompt, params, request_id, lora_request=lora_request)

    async def reset_prefix_cache(self) -> None:
        for engine in self.engines.values():
            await engine.reset_prefix_cache()

    def shutdown(self) -> None:
        for engine in self.engines.values():
            engine.shutdown()


def make_layout_worker(layout: str) -> Any:
    from neuromas_dist.config import load_config
    from neuromas_dist.rollout.worker import RolloutWorker

    slots = [] if layout == "one_engine_all_adapters" else ["rollout.max_loras=1"]
    return RolloutWorker(load_config(None, slots))


async def start_layout(worker: Any, layout: str) -> None:
    """Start the worker's engine(s): one per node for ``one_engine_per_node``, built here by
    swapping the engine builder the worker calls while it starts (the package has one layout)."""
    from unittest import mock

    from neuromas_dist.rollout import worker as worker_module
    from neuromas_dist.rollout.engine import build_engine

    def per_node(cfg: Any, model_dir: str, seed: int) -> EnginePerNode:
        return EnginePerNode({node: build_engine(cfg, model_dir, seed=seed) for node in worker.topology.names})

    if layout != "one_engine_per_node":
        await worker.start()
        return
    with mock.patch.object(worker_module, "build_engine", per_node):
        await worker.start()


def _engine_processes() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _memory_gib(pids: set[int]) -> float:
    """Proportional set size (shared pages split among their sharers) of ``pids``."""
    import psutil

    total = 0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.NoSuchProcess:
            pass
    return total / 2**30


async def layouts(repeats: int) -> dict[str, Any]:
    """The same graph rollout (same step: same seeds) served by each layout; the repeats
    alternate between layouts so drifts of this shared machine's load hit all alike."""
    from benchmarks.rollout_throughput import timed_rollout
    from neuromas_dist.tasks import make_synthetic

    workers, pids = {}, {}
    for layout in LAYOUTS:
        before = _engine_processes()
        workers[layout] = make_layout_worker(layout)
        await start_layout(workers[layout], layout)
        pids[layout] = _engine_processes() - before
    cfg = workers["one_engine_all_adapters"].cfg
    examples = make_synthetic("arith", "eval", cfg.trainer.questions_per_step, 0)
    seconds: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    tokens: dict[str, int] = {}
    for rep in range(repeats + 1):  # repeat 0 warms each layout up and is not kept
        for layout in list(LAYOUTS)[:: 1 if rep % 2 == 0 else -1]:
            s, rows = await timed_rollout(workers[layout], "per_sample", 1, examples, cfg.sampling.n_samples)
            tokens[layout] = sum(len(r["response_ids"]) for r in rows)
            if rep:
                seconds[layout].append(s)
    memory = {layout: _memory_gib(pids[layout]) for layout in LAYOUTS}
    engines = {layout: len(getattr(w.engine, "engines", [w.engine])) for layout, w in workers.items()}
    for worker in workers.values():
        await worker.shutdown()
    workers.clear()
    gc.collect()  # the engines' finalizers must run while the event loop still exists
    return {name: {"what": LAYOUTS[name], "engines": engines[name], "processes": len(pids[name]),
                   "seconds": seconds[name], "generated_tokens": tokens[name],
                   "tokens_per_s": tokens[name] / statistics.median(seconds[name]),
                   "engine_memory_gib": memory[name]} for name in LAYOUTS}


# ----------------------------------------------------------------- the report

def summarize(apart: dict[int, dict[str, Any]], system: dict[str, dict[str, Any]], layout: dict[str, Any]
              ) -> dict[str, Any]:
    one, two = apart[1], apart[2]
    serial = one["rollout_s"] + one["learn_s"] + one["sync_s"]
    overlapped = max(one["rollout_s"], one["learn_s"])
    ours = layout["one_engine_all_adapters"]
    return {
        "rollout_tokens_per_s_per_worker": one["rollout_tokens_per_s_per_worker"],
        "learner_tokens_per_s_per_rank": one["learner_tokens_per_s_per_rank"],
        "workers_per_rank_to_balance": one["workers_per_rank_to_balance"],
        "two_workers_rollout_speedup": one["rollout_s"] / two["rollout_s"],
        "sync_step_s": system["sync"]["step_s"], "rollout_plus_learn_plus_sync_s": serial,
        "sync_step_over_serial": system["sync"]["step_s"] / serial,
        "async_step_s": system["async"]["step_s"], "max_rollout_learn_s": overlapped,
        "async_step_over_max": system["async"]["step_s"] / overlapped, "async_target": ASYNC_TARGET,
        "adapter_sync_bytes_ratio_paper": one["transfer"]["paper_bytes_ratio"],
        "adapter_sync_seconds_ratio_paper": one["transfer"]["paper_seconds_ratio"],
        "layouts_tokens_per_s_vs_ours": {k: v["tokens_per_s"] / ours["tokens_per_s"] for k, v in layout.items()},
        "layouts_memory_vs_ours": {k: v["engine_memory_gib"] / ours["engine_memory_gib"] for k, v in layout.items()},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    one, system, lay = result["phases_apart"]["1"], result["system"], result["layouts"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    bars = {"rollout\nalone": one["rollout_s"], "learn\nalone": one["learn_s"],
            "sync step\n(system)": system["sync"]["step_s"], "async step\n(system)": system["async"]["step_s"]}
    a.bar(list(bars), list(bars.values()), color=["#2a7ab0", "#e08a2c", "#555555", "#3a9a4a"])
    a.axhline(one["rollout_s"] + one["learn_s"] + one["sync_s"], ls="--", c="k", lw=0.8, label="rollout + learn + sync")
    a.axhline(max(one["rollout_s"], one["learn_s"]) * ASYNC_TARGET, ls=":", c="g", lw=0.8,
              label=f"{ASYNC_TARGET} x max(rollout, learn)")
    a.set_ylabel("seconds per step")
    a.legend(fontsize=7)
    a.set_title("one step, 1 worker : 1 rank", fontsize=9)
    names = list(lay)
    b.bar(range(len(names)), [lay[n]["tokens_per_s"] for n in names], color=["#2a7ab0", "#e08a2c", "#888888"])
    b.set_xticks(range(len(names)), ["all adapters\n(ours)", "swap per node\n(max_loras=1)", "engine per node"],
                 fontsize=8)
    for i, n in enumerate(names):
        b.annotate(f"{lay[n]['engine_memory_gib']:.1f} GiB", (i, lay[n]["tokens_per_s"]), ha="center", va="bottom",
                   fontsize=8)
    b.set_ylabel("graph rollout, generated tokens / s")
    b.set_title("engine layouts (label: engines' memory)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="steps per run (the first is left out of medians)")
    ap.add_argument("--layout-repeats", type=int, default=3)
    ap.add_argument("--runs", default="runs/balance", help="where the launcher runs go")
    ap.add_argument("--out", default=str(RESULT))
    args = ap.parse_args(argv)
    root = Path(args.runs)
    root.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": " ".join(["python -m benchmarks.balance", *(argv or sys.argv[1:])]),
                              "overrides": overrides(args.steps), "machine": machine()}
    result["layouts"] = asyncio.run(layouts(args.layout_repeats))
    result["phases_apart"] = {str(w): phases_apart(args.steps, w) for w in (1, 2)}
    result["system"] = {mode: system_step(mode, args.steps, root) for mode in ("sync", "async")}
    result["summary"] = summarize({int(k): v for k, v in result["phases_apart"].items()}, result["system"],
                                  result["layouts"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))
    print(json.dumps(result["summary"], indent=2))
    return 0


def machine() -> dict[str, Any]:
    import os
    import platform

    import torch

    return {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


if __name__ == "__main__":
    sys.exit(main())
