"""What running the graph as an agent program costs: the built-in graph executor vs the same
graph written as a program (``examples/programs/neuromas.py``) through the in-process client
and through the loopback HTTP endpoint with ``openai.AsyncOpenAI``.

One engine, one process, the default graph [2, 1] on the tiny model; each arm rolls out the
same questions and samples (the same request seeds), its calls batched by the one engine as
in training. Reported: generated tokens per second per arm and, per repeat, the program arms'
tokens/s over the graph's (median over repeats, arms alternating because the cores are
shared). The program path adds per call: a chat template rendered in Python, an
``openai`` ``ChatCompletion`` built, and over HTTP a request through aiohttp and the
``openai`` client on the same event loop.

    python -m benchmarks.program_overhead            # ~4 min here
    python -m benchmarks.program_overhead --questions 8 --repeats 1   # quick look
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
AGENTS = ["L0N0", "L0N1", "L1N0"]
ARMS = ("graph", "program", "program_http")


async def neuromas_over_http(question: str, base_url: str) -> str:
    """The NeuroMAS program through the ``openai`` package's own client on the loopback URL."""
    import openai

    from examples.programs import neuromas

    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        return await neuromas.solve(question, client)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--questions", type=int, default=64, help="64 x 4 samples: 256 samples, 768 calls an arm")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS / "program_overhead.json"))
    return p.parse_args(argv)


def executors(worker: Any) -> dict[str, Any]:
    import dataclasses

    from neuromas_dist.programs.entry import load_program
    from neuromas_dist.rollout.calls import EngineCalls
    from neuromas_dist.rollout.program.http import LoopbackEndpoint
    from neuromas_dist.rollout.program.runtime import ProgramExecutor
    from neuromas_dist.rollout.worker import graph_executor

    cfg = worker.cfg
    calls = EngineCalls(worker.engine, worker.tokenizer, cfg.model.max_model_len)
    http = dataclasses.replace(cfg, program=dataclasses.replace(cfg.program, transport="http"))
    return {"graph": graph_executor(cfg, calls, worker.topology, worker.task, None),
            "program": ProgramExecutor(calls, load_program(cfg.program.entry), cfg),
            "program_http": ProgramExecutor(calls, load_program(f"{__name__}:neuromas_over_http", "http"), http,
                                            LoopbackEndpoint())}


async def timed(worker: Any, executor: Any, specs: list, policy: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    tokens = 0
    async for result in executor.stream(specs, worker.adapters.acquire, worker.adapters.release, policy):
        tokens += sum(len(c.response_ids) for c in result.calls)
    return time.perf_counter() - t0, tokens


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from neuromas_dist.config import load_config
    from neuromas_dist.rollout.calls import SamplingPolicy
    from neuromas_dist.rollout.executor import SampleSpec
    from neuromas_dist.rollout.worker import RolloutWorker
    from neuromas_dist.tasks import make_synthetic, synthetic_task

    cfg = load_config(None, ["program.entry=examples.programs.neuromas:solve", f"program.agents={AGENTS}",
                             "model.max_model_len=512"])
    worker = RolloutWorker(cfg, task=synthetic_task("hier"))
    await worker.start()
    arms = executors(worker)
    s = cfg.sampling
    policy = SamplingPolicy(s.temperature, s.top_p, s.max_new_tokens, cfg.trainer.seed)
    examples = make_synthetic("hier", "eval", args.questions, 0)
    for arm in ARMS:  # warm-up: the first batches of each shape allocate
        await timed(worker, arms[arm], [SampleSpec(0, e, 0) for e in examples[:8]], policy)
    runs: dict[str, list[tuple[float, int]]] = {arm: [] for arm in ARMS}
    for rep in range(args.repeats):
        specs = [SampleSpec(1 + rep, e, k) for e in examples for k in range(args.samples)]
        for arm in ARMS[:: 1 if rep % 2 == 0 else -1]:
            runs[arm].append(await timed(worker, arms[arm], specs, policy))
    await arms["program_http"].endpoint.close()
    await worker.shutdown()
    del worker, arms
    gc.collect()  # the engine's finalizer must run while the event loop still exists
    return summarize(args, runs)


def summarize(args: argparse.Namespace, runs: dict[str, list[tuple[float, int]]]) -> dict[str, Any]:
    tps = {arm: [tokens / seconds for seconds, tokens in r] for arm, r in runs.items()}
    ratio = {arm: statistics.median(a / g for a, g in zip(tps[arm], tps["graph"])) for arm in ARMS[1:]}
    return {
        "setup": {"graph": [2, 1], "questions": args.questions, "samples": args.samples, "repeats": args.repeats,
                  "calls_per_arm": 3 * args.questions * args.samples, "model": "tiny",
                  "device": "cpu (2 shared cores)"},
        "seconds": {arm: [round(s, 3) for s, _ in r] for arm, r in runs.items()},
        "generated_tokens": {arm: [t for _, t in r] for arm, r in runs.items()},
        "tokens_per_s_median": {arm: round(statistics.median(v), 1) for arm, v in tps.items()},
        "tokens_per_s_over_graph": {arm: round(v, 3) for arm, v in ratio.items()},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    result = asyncio.run(measure(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("tokens_per_s_median", "tokens_per_s_over_graph")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
