"""The GPU check: run it whenever a CUDA device is at hand, commit what it writes.

    python -m benchmarks.gpu_check [--parts tests,learner,rollout] [--out-dir benchmarks/results]

On whatever CUDA device is present (``cuda:0``), with nothing downloaded (random weights of
the paper's architecture, ``configs/arch/qwen3-0.6b.json``; a tokenizer built locally):

* **tests**: ``pytest tests/learner -m "not ray and not vllm"``, which on a GPU runs every
  learner test on CUDA (float32 exactness tests, references on the rank's device) and the
  ``gpu``-marked ones (bf16 step, update == autograd, export -> PEFT, resume, checkpoint);
* **learner**: the paper config's learner (bf16, LoRA r16 on q/v, ZeRO-2, world size 1) at
  3 and 7 nodes, per-node and mixed micro-batches of 8 rows of 384 prompt + 384 response
  tokens: tokens/s, model TFLOP/s (4 x parameters per token: forward and input-gradient
  backward of the frozen base) and peak memory beside ``--plan``'s;
* **options**: ``benchmarks.learner_throughput --options`` at the same shape, on rows of one
  length and on a GSM8K-like length mix: the plain transformers + PEFT loop against the
  learner as it was (full logits, fixed rows) and under each of its options (response-only
  and chunked logits, a token budget, packed rows): real tokens/s, pad share, peak memory;
* **rollout** (only when vLLM and Ray import; otherwise skipped, and the file says why):
  one rollout step of the paper config's 3-node graph with every adapter loaded, its tokens/s
  beside raw vLLM generation of the same calls, and the bf16 logprob gap learner vs vLLM
  with the share of tokens each rollout correction (TIS, MIS, IcePop) would act on.

Writes ``benchmarks/results/gpu_check_<device>.json``. Each part has its own time limit;
on one H200-class GPU the whole check is meant to take under 13 minutes (`--parts` picks). Run without a GPU it
says so and exits 2 (``--allow-cpu`` runs the same code on the CPU at toy scale: what the
tests use).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.random_model import random_model_dir

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "neuromas3_qwen3-0.6b_gsm8k.yaml"
PARTS = ("tests", "learner", "options", "rollout")


# ----------------------------------------------------------------- the machine

def device_info() -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "host_cpus": os.cpu_count(),
            "cuda": torch.version.cuda, "device": "cpu"}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=p.name, memory_gib=round(p.total_memory / 2 ** 30, 1), capability=f"{p.major}.{p.minor}",
                    driver=_driver_version())
    for name in ("deepspeed", "transformers", "peft", "vllm", "ray"):
        info[name] = _version(name)
    return info


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    for dist in (module, f"{module}-cpu"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def _driver_version() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def device_slug(name: str) -> str:
    """``NVIDIA H200`` -> ``nvidia_h200``: the result file's name."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "unknown"


# ----------------------------------------------------------------- tests

def pytest_counts(summary: str) -> dict[str, int]:
    """Counts from pytest's closing line ("3 failed, 40 passed, 2 skipped in 12.3s")."""
    counts = {k: 0 for k in ("passed", "failed", "skipped", "errors")}
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary):
        key = "errors" if word.startswith("error") else word
        if key in counts:
            counts[key] = int(n)
    return counts


def run_tests(timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "tests/learner",
           "-m", "not ray and not vllm"]
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        return {"command": " ".join(cmd[2:]), "timed_out_after_s": timeout_s,
                "tail": (exc.stdout or b"")[-3000:].decode(errors="replace") if exc.stdout else ""}
    lines = out.stdout.strip().splitlines()
    return {"command": " ".join(cmd[2:]), "returncode": out.returncode, **pytest_counts(lines[-1] if lines else ""),
            "seconds": round(time.perf_counter() - t0, 1),
            "failures": [line for line in lines if line.startswith(("FAILED", "ERROR"))][:30]}


# ----------------------------------------------------------------- learner

def learner_config(model_dir: Path, nodes: int, mode: str, rows: int, prompt: int, response: int,
                   dtype: str = "auto") -> Any:
    from benchmarks.learner_memory import learner_overrides
    from neuromas_dist.config import load_config

    widths = {3: [2, 1], 7: [4, 2, 1]}[nodes]
    return load_config(PAPER, [
        *learner_overrides(model_dir, dtype, rows, prompt, response), f"topology.widths={widths}",
        f"learner.micro_batches={mode}", "learner.max_logprob_gap=1000000000.0",  # random logprobs: speed only
        "resources.gpu_memory_gb=1000"])


def learner_case(model_dir: Path, nodes: int, mode: str, *, rows: int = 8, prompt: int = 384,
                 response: int = 384, questions: int = 8, samples: int = 8, steps: int = 3,
                 dtype: str = "auto") -> dict[str, Any]:
    """One learner at paper shape: warm-up step, ``steps`` timed steps, peak memory of a step
    (weights and everything held) beside the plan's peak for the same shape."""
    import statistics

    from benchmarks.learner_memory import peak_bytes
    from benchmarks.learner_throughput import deepspeed_step, make_batch, node_names
    from neuromas_dist.driver.memory_model import learner_memory, measure
    from neuromas_dist.learner.rank import LearnerRank

    cfg = learner_config(model_dir, nodes, mode, rows, prompt, response, dtype)
    names = node_names(nodes)
    vocab = measure(cfg).vocab
    batches = [make_batch(s, vocab, questions, samples, prompt, response, names) for s in range(steps + 1)]
    base = _allocated()
    rank = LearnerRank(cfg, str(model_dir), names)
    rank.setup()
    deepspeed_step(rank, batches[0])
    times, peak = [], 0
    for b in batches[1:]:
        box: list[float] = []
        held = _allocated() - base  # weights, adapters, optimizer state: what the rank keeps between steps
        peak = max(peak, held + peak_bytes(lambda b=b, box=box: box.append(deepspeed_step(rank, b)), rank.device))
        times.append(box[0])
    tokens = batches[0].num_rows * (prompt + response)
    a = measure(cfg)
    plan = learner_memory(cfg, a, padded=False)  # the rows have one length: no padding mask
    # the CPU profiler sees only what a step allocates: compare it with the plan's per-step part
    planned = sum(plan.values()) if rank.device.type == "cuda" else plan["activations"] + plan["logits"]
    tps = tokens / statistics.median(times)
    out = {"nodes": nodes, "micro_batches": mode, "rows_per_pass": rows, "tokens_per_step": tokens,
           "step_s": [round(t, 3) for t in times], "tokens_per_s": round(tps, 1),
           "model_tflops": round(4 * a.params * tps / 1e12, 3),
           "peak_gib": round(peak / 2 ** 30, 3), "plan_peak_gib": round(planned / 2 ** 30, 3),
           "plan_over_measured": round(planned / max(peak, 1), 3)}
    return out


def _allocated() -> int:
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0


def run_learner(model_dir: Path, deadline: float, **shape: Any) -> list[dict[str, Any]]:
    out = []
    for nodes in (3, 7):
        for mode in ("per_node", "mixed"):
            if time.monotonic() > deadline:
                out.append({"nodes": nodes, "micro_batches": mode, "skipped": "time limit of the learner part"})
                continue
            out.append(learner_case(model_dir, nodes, mode, **shape))
            print(f"[gpu_check] learner {out[-1]}", flush=True)
            gc.collect()  # the case's rank is gone: its memory goes back before the next one is built
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return out


def run_options(model_dir: Path, timeout_s: float, shape: dict[str, int], workdir: Path) -> dict[str, Any]:
    """The learner's options against the plain loop, each length mix in its own process
    with half the time limit (a timed-out one is recorded as such)."""
    from benchmarks.learner_throughput import OPTIONS

    out: dict[str, Any] = {}
    for lengths in ("equal", "gsm8k-like"):
        path = workdir / f"options_{lengths}.json"
        cmd = [sys.executable, "-m", "benchmarks.learner_throughput", "--model", str(model_dir), "--nodes", "3",
               "--options", ",".join(OPTIONS), "--lengths", lengths, "--prompt", str(shape["prompt"]),
               "--response", str(shape["response"]), "--questions", str(shape["questions"]),
               "--samples", str(shape["samples"]), "--steps", str(shape["steps"]),
               "--micro-batch", str(shape["rows"]), "--out", str(path)]
        try:
            done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s / 2)
            out[lengths] = (json.loads(path.read_text()) if done.returncode == 0
                            else {"returncode": done.returncode, "tail": done.stderr[-2000:]})
        except subprocess.TimeoutExpired:
            out[lengths] = {"timed_out_after_s": timeout_s / 2}
        print(f"[gpu_check] options {lengths} {out[lengths]}", flush=True)
    return out


# ----------------------------------------------------------------- rollout

def rollout_missing() -> str | None:
    """Why the rollout part cannot run here, or None."""
    missing = [m for m in ("vllm", "ray") if importlib.util.find_spec(m) is None]
    return f"{' and '.join(missing)} not installed: rollout part skipped" if missing else None


def run_rollout(model_dir: Path, questions: int, overrides: list[str] = ()) -> dict[str, Any]:
    """One rollout step of the paper config's graph (every node's adapter loaded, random non-zero
    B), the same calls replayed as raw vLLM generation, and the learner's bf16 logprobs of the
    rows against vLLM's."""
    import asyncio

    return asyncio.run(_rollout(model_dir, questions, list(overrides)))


async def _rollout(model_dir: Path, questions: int, overrides: list[str]) -> dict[str, Any]:
    from benchmarks.rollout_throughput import timed_raw, timed_rollout
    from neuromas_dist.config import load_config
    from neuromas_dist.learner.rank import LearnerRank
    from neuromas_dist.rollout.adapters import random_b_adapter_set, zero_adapter_set
    from neuromas_dist.rollout.worker import RolloutWorker
    from neuromas_dist.tasks import make_synthetic, synthetic_task
    from neuromas_dist.trajectories.schema import TrajectoryRow, to_record_batch

    cfg = load_config(PAPER, [f"model.name_or_path={model_dir}", f"model.arch_config={model_dir / 'arch.json'}",
                              "rollout.num_workers=1", "rollout.gpu_memory_utilization=0.5", "learner.num_ranks=1",
                              "learner.max_logprob_gap=1000000000.0", *overrides])
    worker = RolloutWorker(cfg, model_dir=str(model_dir), task=synthetic_task("arith"))
    start = await worker.start()
    adapters = random_b_adapter_set(zero_adapter_set(model_dir, worker.topology.names, cfg.lora), version=1, scale=0.05)
    await worker.load_adapters(adapters)
    examples, samples = make_synthetic("arith", "eval", questions, 0), cfg.sampling.n_samples
    await timed_rollout(worker, "per_sample", 1, examples[:2], samples)  # warm-up
    graph_s, rows = await timed_rollout(worker, "per_sample", 1, examples, samples)
    raw_s = await timed_raw(worker, rows)
    await worker.shutdown()
    tokens = sum(len(r["response_ids"]) for r in rows)
    rank = LearnerRank(cfg, str(model_dir), worker.topology.names, init_adapters=adapters)
    rank.setup()
    gap = logprob_gaps(rows, rank.score(to_record_batch([TrajectoryRow(**r) for r in rows])))
    return {"engine_start_s": round(start.get("rollout/engine_start_s", float("nan")), 1), "node_calls": len(rows),
            "generated_tokens": tokens, "graph_tokens_per_s": round(tokens / graph_s, 1),
            "raw_tokens_per_s": round(tokens / raw_s, 1), "graph_vs_raw_ratio": round(raw_s / graph_s, 3),
            "dtype": str(next(rank.module.parameters()).dtype), "logprob_gap": gap}


def logprob_gaps(rows: list[dict], learner: list[list[float]]) -> dict[str, dict[str, Any]]:
    """Per node: mean and max |learner - vLLM| over the rows' tokens, and the share of tokens
    each rollout correction would truncate or drop at its default bounds (``learner.
    rollout_correction``, computed by the learner's own ``algos.correction_weights``)."""
    from neuromas_dist.learner import algos

    per: dict[str, list[list[float]]] = {}
    for row, lp in zip(rows, learner):
        per.setdefault(row["node"], []).append([a - b for a, b in zip(lp, row["logprobs"])])
    out: dict[str, dict[str, Any]] = {}
    for node, diffs in sorted(per.items()):
        flat = [abs(x) for d in diffs for x in d]
        width = max((len(d) for d in diffs), default=0)
        log_ratio = torch.tensor([d + [0.0] * (width - len(d)) for d in diffs])
        mask = torch.tensor([[j < len(d) for j in range(width)] for d in diffs])
        corrected = {kind: round(float(algos.correction_weights(log_ratio, mask, kind)[1].sum()) / max(len(flat), 1), 5)
                     for kind in ("tis_token", "tis_seq", "mis_token", "mis_seq", "icepop")}
        out[node] = {"mean": round(sum(flat) / max(len(flat), 1), 5), "max": round(max(flat, default=0.0), 5),
                     "tokens": len(flat), "corrected_share": corrected}
    return out


# ----------------------------------------------------------------- the check

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default=",".join(PARTS), help="any of " + ",".join(PARTS))
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--tests-timeout", type=float, default=240.0)
    p.add_argument("--learner-timeout", type=float, default=180.0, help="no new learner case starts after this")
    p.add_argument("--options-timeout", type=float, default=300.0, help="the options part, both length mixes")
    p.add_argument("--questions", type=int, default=16, help="rollout questions (x sampling.n_samples, 8)")
    p.add_argument("--arch", default=str(REPO / "configs" / "arch" / "qwen3-0.6b.json"),
                   help="architecture JSON of the random model")
    p.add_argument("--shape", default="8,384,384,8,8,3",
                   help="learner: rows per pass, prompt, response tokens, questions, samples, timed steps")
    p.add_argument("--override", action="append", default=[], help="config override for the rollout part (repeat)")
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU (toy scale; for the tests)")
    return p.parse_args(argv)


def learner_shape(spec: str) -> dict[str, int]:
    keys = ("rows", "prompt", "response", "questions", "samples", "steps")
    values = [int(v) for v in spec.split(",")]
    if len(values) != len(keys) or min(values) < 1:
        raise ValueError(f"--shape {spec!r}: six positive integers, {','.join(keys)}")
    return dict(zip(keys, values))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device here; nothing measured (--allow-cpu runs it on the CPU at toy scale)")
        return 2
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"gpu_check: unknown part(s) {unknown}; choose from {list(PARTS)}")
        return 2
    result: dict[str, Any] = {"command": "python -m benchmarks.gpu_check " + " ".join(argv or sys.argv[1:]),
                              "machine": device_info(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.monotonic()
    if "tests" in parts:
        result["tests"] = run_tests(args.tests_timeout)
        print(f"[gpu_check] tests {result['tests']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        needs_model = {"learner", "options", "rollout"} & set(parts)
        model_dir = random_model_dir(Path(tmp) / "random-model", Path(args.arch)) if needs_model else None
        if "learner" in parts:
            result["learner"] = run_learner(model_dir, time.monotonic() + args.learner_timeout,
                                            **learner_shape(args.shape))
        if "options" in parts:
            result["options"] = run_options(model_dir, args.options_timeout, learner_shape(args.shape), Path(tmp))
        if "rollout" in parts:
            why = rollout_missing()
            result["rollout"] = {"skipped": why} if why else run_rollout(model_dir, args.questions, args.override)
            print(f"[gpu_check] rollout {result['rollout']}", flush=True)
    result["seconds"] = round(time.monotonic() - t0, 1)
    out = Path(args.out_dir) / f"gpu_check_{device_slug(result['machine']['device'])}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"[gpu_check] wrote {out} ({result['seconds']} s)")
    return 1 if result.get("tests", {}).get("failed") or result.get("tests", {}).get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
