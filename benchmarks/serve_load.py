"""Load on a served run: concurrent `openai` clients against `python -m neuromas_dist.serve`
on localhost, beside the same questions through the graph in one batch (``generate``'s
path: the ceiling of one engine).

    python -m benchmarks.serve_load RUN_DIR [--clients 16] [--seconds 60] [--max-requests 400]

The server is started here (its engine start is not timed) and asked greedy questions of
the run's held-out set, round robin, by ``--clients`` clients each sending its next request
when its last one is answered, for ``--seconds`` or ``--max-requests``. Reported: requests/s,
p50/p99 latency, generated tokens/s (every node's completion tokens), errors. Then the
server stops and the same number of questions runs through ``ServedGraph.answer`` all at
once in this process (engine start not timed either). Writes
benchmarks/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def heldout_questions(run_dir: Path) -> list[str]:
    from neuromas_dist.run_dir import run_config
    from neuromas_dist.tasks.data import load_task_data

    return [e.question for e in load_task_data(run_config(run_dir).data).eval]


def start_server(run_dir: Path, port: int, log: Path) -> subprocess.Popen:
    import httpx

    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "neuromas_dist.serve", str(run_dir), "--port", str(port),
                                 "--model-name", "load"], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + log.read_text()[-2000:])
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError("server did not start in 300 s")


async def load(url: str, questions: list[str], clients: int, seconds: float, max_requests: int) -> dict:
    from openai import AsyncOpenAI

    api = AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    latencies: list[float] = []
    tokens, errors, issued = [0], [], [0]
    end = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < end and issued[0] < max_requests:
            question = questions[issued[0] % len(questions)]
            issued[0] += 1
            t0 = time.perf_counter()
            try:
                r = await api.chat.completions.create(model="load", messages=[{"role": "user", "content": question}])
                latencies.append(time.perf_counter() - t0)
                tokens[0] += r.usage.completion_tokens
            except Exception as exc:  # noqa: BLE001 - every failure is counted, and the first few kept
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(clients)))
    finally:
        await api.close()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {"requests": len(lat), "errors": len(errors), "error_examples": errors[:3], "seconds": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 3), "tokens_per_s": round(tokens[0] / wall, 1),
            "latency_p50_s": round(statistics.median(lat), 3) if lat else None,
            "latency_p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3) if lat else None}


async def batch(run_dir: Path, questions: list[str]) -> dict:
    from neuromas_dist.serve.graph import ServedGraph

    graph = ServedGraph(run_dir)
    await graph.start()
    try:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(graph.answer(q) for q in questions))
        wall = time.perf_counter() - t0
    finally:
        await graph.shutdown()
    tokens = sum(len(c.response_ids) for (r,) in results for c in r.calls)
    return {"requests": len(questions), "seconds": round(wall, 2), "requests_per_s": round(len(questions) / wall, 3),
            "tokens_per_s": round(tokens / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--max-requests", type=int, default=400)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "serve_load.json"))
    args = ap.parse_args()
    run_dir = Path(args.run_dir)
    questions = heldout_questions(run_dir)
    proc = start_server(run_dir, args.port, Path(tempfile.gettempdir()) / "serve_load.server.log")
    try:
        served = asyncio.run(load(f"http://127.0.0.1:{args.port}", questions, args.clients, args.seconds,
                                  args.max_requests))
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    ceiling = asyncio.run(batch(run_dir, [questions[i % len(questions)] for i in range(served["requests"])]))
    result = {"run_dir": str(run_dir), "clients": args.clients, "served": served, "batch_ceiling": ceiling,
              "served_over_batch": round(served["tokens_per_s"] / ceiling["tokens_per_s"], 3)
              if ceiling["tokens_per_s"] else None,
              "machine": f"{platform.machine()} {os.cpu_count()} CPUs, no GPU" if not _cuda() else "cuda",
              "command": "python -m benchmarks.serve_load " + " ".join(sys.argv[1:])}
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
