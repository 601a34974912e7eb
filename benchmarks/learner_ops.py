"""Where the learner's small elementwise kernels come from: every aten ``mul`` and
``copy_`` (and the other frequent ops) of one learner pass, by the module that ran it
(forward) or the autograd node whose backward ran it.

    python -m benchmarks.learner_ops [--layers 2] [--dtype bfloat16] [--rows 2] [--tokens 32]

A random model of Qwen3-0.6B's layer shape (hidden 1024, 16 q / 8 kv heads of 128, MLP
3072; ``--layers`` of them, a small vocabulary: counts per layer do not depend on either),
LoRA r16 on q_proj and v_proj, one learner rank (DeepSpeed, ``model.dtype``), one pass of
one node's rows under the torch profiler. Op counts do not depend on the number of
tokens, so a CPU run counts what a GPU pass launches (the same transformers and PEFT code;
only the attention kernel differs). Writes benchmarks/results/learner_ops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

REPO = Path(__file__).resolve().parents[1]
WATCH = ("aten::mul", "aten::copy_", "aten::add", "aten::mm", "aten::cat", "aten::pow", "aten::mean", "aten::rsqrt")


def tag_modules(model: torch.nn.Module) -> None:
    """A profiler range per module call, named by the module's class."""
    from torch.autograd.profiler import record_function

    def enter(module, _args):
        module._op_range = record_function(f"module::{type(module).__name__}")
        module._op_range.__enter__()

    def leave(module, _args, _out):
        module._op_range.__exit__(None, None, None)

    for m in model.modules():
        m.register_forward_pre_hook(enter)
        m.register_forward_hook(leave)


def owner(event) -> str:
    """The innermost module range or autograd backward node around a profiler event."""
    e = event.cpu_parent
    while e is not None:
        if e.name.startswith("module::"):
            return "forward " + e.name[len("module::"):]
        if e.name.startswith("autograd::engine::evaluate_function: "):
            return "backward " + e.name.split(": ", 1)[1]
        e = e.cpu_parent
    return "outside modules"


def count_ops(rank, rows) -> dict[str, dict[str, int]]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rank.grads._micro_batch(rows)
    by_op: dict[str, Counter] = defaultdict(Counter)
    for e in prof.events():
        if e.name in WATCH:
            by_op[e.name][owner(e)] += 1
    return {op: dict(c.most_common()) for op, c in sorted(by_op.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32, help="prompt and response tokens per row (each)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "learner_ops.json"))
    args = ap.parse_args()
    from benchmarks.learner_memory import learner_overrides
    from benchmarks.learner_throughput import make_batch
    from benchmarks.random_model import random_model_dir
    from neuromas_dist.config import load_config
    from neuromas_dist.learner.rank import LearnerRank
    from neuromas_dist.learner.rows import rows_of

    with tempfile.TemporaryDirectory() as tmp:
        arch = Path(tmp) / "arch.json"
        arch.write_text(json.dumps({
            "model_type": "qwen3", "vocab_size": 4096, "hidden_size": 1024, "intermediate_size": 3072,
            "num_hidden_layers": args.layers, "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
            "tie_word_embeddings": True, "max_position_embeddings": 4096}))
        model_dir = random_model_dir(Path(tmp) / "model", arch, torch.float32)
        cfg = load_config(None, [*learner_overrides(model_dir, args.dtype, args.rows, args.tokens, args.tokens),
                                 "lora.rank=16", "lora.alpha=32", "lora.target_modules=[q_proj,v_proj]",
                                 "learner.max_logprob_gap=1e9"])
        rank = LearnerRank(cfg, str(model_dir), ("L0N0", "L0N1", "L1N0"))
        rank.setup()
        tag_modules(rank.module)
        rows = [r for r in rows_of(make_batch(1, 4096, 1, args.rows, args.tokens, args.tokens, ("L0N0",)))]
        rank.grads._micro_batch(rows)  # warm-up
        ops = count_ops(rank, rows)
    totals = {op: sum(c.values()) for op, c in ops.items()}
    result = {"settings": vars(args), "per_pass": totals,
              "per_layer": {op: round(n / args.layers, 1) for op, n in totals.items()}, "by_owner": ops}
    for op, c in ops.items():
        top = ", ".join(f"{k} {v}" for k, v in list(c.items())[:6])
        print(f"{op:14s} {totals[op]:5d}  {top}")
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
