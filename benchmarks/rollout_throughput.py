"""Graph executor vs raw vLLM generation, and per-sample vs layer-barrier scheduling.

One engine, one process. The graph rollout runs first; then exactly its node calls
(same prompt ids, same LoRA adapter per call, same number of generated tokens via
``min_tokens = max_tokens = n`` and ``ignore_eos``) are replayed through the engine as
raw generation with every request submitted at once: no graph dependencies, no
prompt rendering, no scoring. The ratio of generated tokens per second, graph over
raw, is the overhead of executing the agent graph (target >= 0.9). Runs alternate and
the median is kept, because this machine's cores are shared.

    python -m benchmarks.rollout_throughput            # ~5 min here
    python -m benchmarks.rollout_throughput --questions 8 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--widths", default="2,2,2,1", help="topology, nodes per layer")
    p.add_argument("--questions", type=int, default=64,
                   help="64 x 4 samples = 256 samples: the default run's samples per step")
    p.add_argument("--samples", type=int, default=4, help="samples per question")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--model-dir", default="", help="model directory (default: the local tiny model)")
    p.add_argument("--out", default=str(RESULTS / "rollout_throughput.json"))
    return p.parse_args(argv)


def make_worker(args: argparse.Namespace) -> Any:
    from neuromas_dist.config import load_config
    from neuromas_dist.rollout.worker import RolloutWorker
    from neuromas_dist.tasks import synthetic_task

    widths = [int(w) for w in args.widths.split(",")]
    cfg = load_config(None, [f"topology.widths={widths}", f"sampling.max_new_tokens={args.max_new_tokens}",
                             "rollout.batch_samples=16", "model.max_model_len=512"])
    return RolloutWorker(cfg, model_dir=args.model_dir or None, task=synthetic_task("arith"))


async def timed_rollout(worker: Any, scheduling: str, step: int, examples: list, samples: int
                        ) -> tuple[float, list[dict]]:
    """One rollout of ``examples`` by the worker, per sample (the package's scheduler) or with
    a barrier per layer (``layer_barrier``, built here for the comparison)."""
    import pyarrow as pa

    executor = worker._executor  # the benchmark swaps the scheduler on this instance only
    if scheduling == "layer":
        executor.stream = layer_barrier(executor)
    await worker.engine.reset_prefix_cache()  # runs replay the same prompts: no warm cache for any
    try:
        t0 = time.perf_counter()
        items = [b async for b in worker.rollout(step, examples, samples)]  # one learner rank: piece, summary, ...
        return time.perf_counter() - t0, pa.Table.from_batches(items[0::2]).to_pylist()
    finally:
        executor.__dict__.pop("stream", None)


def layer_barrier(executor: Any) -> Any:
    """The graph executor's ``stream`` with a barrier per layer: layer l of every sample, then
    layer l + 1 (how a framework that batches by role would run the graph)."""
    topology = executor.topology

    async def stream(specs: list, acquire: Any, release: Any, policy: Any) -> Any:
        pins = [acquire() for _ in specs]
        calls: list[dict[str, Any]] = [{} for _ in specs]
        try:
            for layer in range(topology.num_layers):
                jobs = [(i, n.name) for i in range(len(specs)) for n in topology.layer_nodes(layer)]
                done = await asyncio.gather(*(
                    executor.call_node(specs[i], node, {src: calls[i][src].text for src in topology.node(node).inputs},
                                       pins[i], policy) for i, node in jobs))
                for (i, node), call in zip(jobs, done):
                    calls[i][node] = call
        finally:
            for pin in pins:
                release(pin)
        for spec, pin, by_node in zip(specs, pins, calls):
            yield executor._result(spec, pin, list(by_node.values()))

    return stream


async def timed_raw(worker: Any, rows: list[dict]) -> float:
    """Replay the graph's node calls as independent requests, all submitted at once."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    pin = worker.adapters.acquire()
    calls = [r for r in rows if r["response_ids"]]
    await worker.engine.reset_prefix_cache()

    async def one(i: int, row: dict) -> None:
        n = len(row["response_ids"])
        params = SamplingParams(temperature=worker.cfg.sampling.temperature, max_tokens=n, min_tokens=n,
                                ignore_eos=True, logprobs=0, seed=i, detokenize=False,
                                output_kind=RequestOutputKind.FINAL_ONLY)
        async for _ in worker.engine.generate(TokensPrompt(prompt_token_ids=row["prompt_ids"]), params,
                                              f"raw{time.monotonic_ns()}-{i}", lora_request=pin.requests[row["node"]]):
            pass

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, r) for i, r in enumerate(calls)))
    elapsed = time.perf_counter() - t0
    worker.adapters.release(pin)
    return elapsed


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from neuromas_dist.tasks import make_synthetic

    worker = make_worker(args)
    await worker.start()
    examples = make_synthetic("arith", "eval", args.questions, 0)
    for scheduling in ("per_sample", "layer"):  # warm-up: first batches of each shape allocate
        await timed_rollout(worker, scheduling, 0, examples[:8], args.samples)
    runs: dict[str, list[float]] = {"per_sample": [], "layer": [], "raw": []}
    tokens = {}
    for rep in range(args.repeats):
        step = 1 + rep  # same step for both schedulers: identical seeds, identical work
        # Alternate the order: the cores are shared, so load drifts within a repeat.
        for scheduling in ("per_sample", "layer")[:: 1 if rep % 2 == 0 else -1]:
            seconds, rows = await timed_rollout(worker, scheduling, step, examples, args.samples)
            runs[scheduling].append(seconds)
            tokens[scheduling] = sum(len(r["response_ids"]) for r in rows)
            if scheduling == "per_sample":
                graph_rows = rows
        runs["raw"].append(await timed_raw(worker, graph_rows))
        tokens["raw"] = tokens["per_sample"]
    await worker.shutdown()
    del worker
    gc.collect()  # the engine's finalizer must run while the event loop still exists
    return summarize(args, runs, tokens, len(graph_rows))


def paired_ratio(runs: dict[str, list[float]], a: str, b: str) -> float:
    """Median over repeats of time(b) / time(a) within the same repeat (same work,
    adjacent in time), so slow drifts of the shared machine's load cancel."""
    return statistics.median(tb / ta for ta, tb in zip(runs[a], runs[b]))


def summarize(args: argparse.Namespace, runs: dict[str, list[float]], tokens: dict[str, int], calls: int
              ) -> dict[str, Any]:
    tps = {k: tokens[k] / statistics.median(v) for k, v in runs.items()}
    ratio = {k: paired_ratio(runs, k, "raw") for k in ("per_sample", "layer")}
    best = max(ratio, key=ratio.get)
    return {
        "setup": {"widths": args.widths, "questions": args.questions, "samples": args.samples,
                  "node_calls": calls, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
                  "device": "cpu (2 shared cores)", "model": args.model_dir or "tiny"},
        "seconds": runs,
        "generated_tokens": tokens,
        "rollout/tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "graph_vs_raw_ratio": round(ratio[best], 3),
        "per_sample_vs_raw_ratio": round(ratio["per_sample"], 3),
        "layer_vs_raw_ratio": round(ratio["layer"], 3),
        "per_sample_vs_layer_ratio": round(paired_ratio(runs, "per_sample", "layer"), 3),
        "best_scheduling": best,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tps = result["rollout/tokens_per_s"]
    names = ["raw", "per_sample", "layer"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bars = ax.bar(["raw vLLM", "graph\nper-sample", "graph\nlayer barrier"], [tps[n] for n in names],
                  color=["#888888", "#2a7ab0", "#e08a2c"])
    for bar, name in zip(bars, names):
        ratio = "1.00x" if name == "raw" else f"{result[name + '_vs_raw_ratio']:.2f}x"
        ax.annotate(ratio, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    s = result["setup"]
    ax.set_ylabel("generated tokens / s")
    ax.set_title(f"rollout throughput, {s['widths']} graph, {s['node_calls']} node calls", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    result = asyncio.run(measure(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k not in ("seconds",)}, indent=2))
    return result


if __name__ == "__main__":
    main()
