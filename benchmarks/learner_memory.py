"""Peak memory of the learner's micro-batch, measured, beside what ``--plan`` predicts.

    python -m benchmarks.learner_memory [--out benchmarks/results/learner_memory_cpu.json]

On the CPU the peak comes from torch's own allocator: the profiler's memory events
(every allocation and free of a tensor's storage, in order) are summed into the live bytes
over time. Peak RSS or tracemalloc would see the allocator's caching and the Python heap,
not tensors. On CUDA it is ``torch.cuda.max_memory_allocated``. Either way the number is the
peak above what was allocated when the measured call began, so weights and adapters are
out of it: it is compared with the plan's ``activations + logits``.

Each case builds a small random Qwen3, one learner rank (DeepSpeed, world size 1) and one
micro-batch of equal-length rows (one question's samples of one node, leave-one-out
baseline), runs it once to warm up, then measures the next identical one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from neuromas_dist.config import Config, load_config

if not torch.cuda.is_available():  # DeepSpeed would probe for an accelerator and warn
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

REPO = Path(__file__).resolve().parents[1]
NODES = ("L0N0", "L0N1", "L1N0")


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured shape: a random Qwen3, its LoRA, one micro-batch."""

    name: str
    dtype: str = "float32"
    layers: int = 4
    hidden: int = 256
    intermediate: int = 768
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    vocab: int = 4096
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    lora_rank: int = 16
    rows: int = 4
    prompt: int = 96
    response: int = 96
    top_p: float = 1.0
    ragged: bool = False  # every other row's prompt 16 tokens shorter: a padding mask
    logits: str = "chunked"  # learner.logits
    chunk: int = 1024  # learner.logprob_chunk_tokens


CASES = (
    Case("qwen3-small fp32"),
    Case("qwen3-small bf16", dtype="bfloat16"),
    Case("all seven targets, wide MLP, one kv head, bf16", dtype="bfloat16", layers=3, hidden=192,
         intermediate=1024, heads=6, kv_heads=1, head_dim=32,
         targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), lora_rank=8),
    Case("logits-heavy, short prompts, top-p 0.9", layers=2, vocab=16384, prompt=32, response=160, top_p=0.9),
    Case("logits-heavy, full logits, top-p 0.9", layers=2, vocab=16384, prompt=32, response=160, top_p=0.9,
         logits="full"),
    Case("logits-heavy, response logits", layers=2, vocab=16384, prompt=32, response=160, logits="response"),
    Case("logits-heavy, chunks of 128 tokens, top-p 0.9", layers=2, vocab=16384, prompt=32, response=160, top_p=0.9,
         chunk=128),
    Case("rows of two lengths (padding mask), bf16", dtype="bfloat16", ragged=True),
)


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak tensor bytes allocated on ``device`` while ``fn`` runs, above the start."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def save_random_qwen3(path: Path, case: Case) -> Path:
    from benchmarks.random_model import random_model_dir

    arch = path.parent / f"{path.name}.arch.json"
    arch.write_text(json.dumps({
        "model_type": "qwen3", "vocab_size": case.vocab, "hidden_size": case.hidden,
        "intermediate_size": case.intermediate, "num_hidden_layers": case.layers, "num_attention_heads": case.heads,
        "num_key_value_heads": case.kv_heads, "head_dim": case.head_dim, "tie_word_embeddings": True,
        "max_position_embeddings": max(1024, case.prompt + case.response)}))
    return random_model_dir(path, arch, torch.float32)


def learner_overrides(model_dir: Path, dtype: str, rows: int, prompt: int, response: int) -> list[str]:
    """Config overrides of one learner rank over ``model_dir`` whose micro-batch is ``rows`` rows of
    ``prompt + response`` tokens: the plan of such a config is the plan of exactly that micro-batch."""
    return [f"model.name_or_path={model_dir}", f"model.arch_config={model_dir / 'arch.json'}", f"model.dtype={dtype}",
            f"model.max_model_len={prompt + response}", f"sampling.max_new_tokens={response}",
            "learner.num_ranks=1", f"learner.micro_batch_size={rows}"]


def case_config(case: Case, model_dir: Path) -> Config:
    return load_config(None, [
        *learner_overrides(model_dir, case.dtype, case.rows, case.prompt, case.response),
        f"lora.rank={case.lora_rank}", f"lora.alpha={2.0 * case.lora_rank}",
        f"lora.target_modules=[{','.join(case.targets)}]", f"sampling.n_samples={case.rows}",
        f"sampling.top_p={case.top_p}", "learner.baseline=loo", f"learner.logits={case.logits}",
        f"learner.logprob_chunk_tokens={case.chunk}"])


def one_question(case: Case, seed: int, vocab: int):
    """``case.rows`` samples of one question at node L0N0: one complete leave-one-out group,
    so ``accumulate`` runs exactly one micro-batch of them."""
    from neuromas_dist.trajectories.schema import make_row, to_record_batch

    rng = random.Random(seed)
    rows = [make_row("L0N0", "q0", k,
                     prompt_ids=[rng.randrange(3, vocab) for _ in range(case.prompt - 16 * (case.ragged and k % 2))],
                     response_ids=[rng.randrange(3, vocab) for _ in range(case.response)], finish_reason="length",
                     response_truncated=False, reward=float(k % 2))
            for k in range(case.rows)]
    return to_record_batch(rows)


def measure_case(case: Case, workdir: Path) -> dict[str, Any]:
    """Measured peak of one micro-batch beside the plan's activations + logits for it."""
    from neuromas_dist.driver.memory_model import learner_memory, measure
    from neuromas_dist.learner.rank import LearnerRank

    model_dir = save_random_qwen3(workdir / case.name.replace(" ", "_").replace(",", ""), case)
    cfg = case_config(case, model_dir)
    rank = LearnerRank(cfg, str(model_dir), NODES)
    rank.setup()
    rank.accumulate(one_question(case, 0, case.vocab))  # warm-up: lazy buffers, kernel caches
    measured = peak_bytes(lambda: rank.accumulate(one_question(case, 1, case.vocab)), rank.device)
    plan = learner_memory(cfg, measure(cfg), padded=case.ragged)
    predicted = plan["activations"] + plan["logits"]
    return {"case": dataclasses.asdict(case), "device": str(rank.device), "measured_bytes": measured,
            "plan_bytes": predicted, "plan_activations": plan["activations"], "plan_logits": plan["logits"],
            "plan_over_measured": predicted / measured}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "learner_memory_cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure_case(c, Path(tmp)) for c in CASES]
    for r in results:
        print(f"{r['case']['name']:52s} measured {r['measured_bytes'] / 2**20:8.2f} MiB  "
              f"plan {r['plan_bytes'] / 2**20:8.2f} MiB  plan/measured {r['plan_over_measured']:.3f}")
    out = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "cpus": os.cpu_count(),
           "torch": torch.__version__, "command": "python -m benchmarks.learner_memory", "cases": results}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
