"""Learner throughput: DeepSpeed learner with per-node and with mixed-node micro-batches,
and a plain PEFT + torch AdamW loop, at 3 and 7 nodes.

    python -m benchmarks.learner_throughput [--model DIR] [--steps 5] [--threads 1] [--nodes 3,7]

All run the same joint REINFORCE step (forward + backward of every node's rows, one
optimizer step over all adapters) on the same synthetic batches: a [2, 1] (3 nodes) or
[4, 2, 1] (7 nodes) graph, 16 questions x 4 samples, 64 prompt + 24 response tokens per
row, LoRA rank 8 on all seven Qwen3 projections, micro-batches of 32 rows. Per-node
micro-batches hold one node's rows under its adapter (``learner.micro_batches=per_node``);
mixed ones hold rows of every node, each routed to its own adapter (``mixed``). Steps
alternate between the learners so load from other processes hits all alike; the median
step time is reported. Tokens counted are prompt + response tokens run through forward
and backward. Writes benchmarks/results/learner_throughput.json.

``--pass-rows 8,32`` adds per-node learners whose micro-batches hold that many rows: the
ratio of their tokens/s (largest over smallest) is the most that merging passes of the
small size into passes of the large size can buy, with no routing cost at all, which is
the ceiling for mixed micro-batches.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import json
import math
import os
import platform
import pstats
import random
import statistics
import time
from pathlib import Path

import torch

if not torch.cuda.is_available():  # on a GPU DeepSpeed picks CUDA (benchmarks.gpu_check imports this)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")

from neuromas_dist.config import Config
from neuromas_dist.learner import algos
from neuromas_dist.learner.forward import gathered
from neuromas_dist.learner.model import build_peft_model, torch_dtype
from neuromas_dist.learner.packing import build_inputs, pad_fraction
from neuromas_dist.learner.rank import LearnerRank
from neuromas_dist.learner.rows import Row
from neuromas_dist.trajectories.schema import make_row, to_record_batch

REPO = Path(__file__).resolve().parents[1]
WIDTHS = {3: (2, 1), 7: (4, 2, 1)}


def node_names(nodes: int) -> tuple[str, ...]:
    from neuromas_dist.graph.topology import Topology

    return tuple(Topology.build(WIDTHS[nodes]).names)


def row_lengths(kind: str, rng: random.Random, prompt: int, response: int, scale: float = 1.0) -> tuple[int, int]:
    """(prompt, response) tokens of one row. ``equal``: the given lengths. ``gsm8k-like``: a
    node's prompt of 100-400 tokens (a GSM8K question, the graph's prompt and upstream text)
    and an answer of 50-512 (log-normal, median 180), both times ``scale``."""
    if kind == "equal":
        return prompt, response
    p = rng.randint(100, 400)
    r = min(max(int(rng.lognormvariate(math.log(180), 0.6)), 50), 512)
    return max(1, round(p * scale)), max(1, round(r * scale))


def make_batch(seed: int, vocab: int, questions: int, samples: int, prompt: int, response: int,
               nodes: tuple[str, ...], lengths: str = "equal", scale: float = 1.0):
    """Batch ``seed`` is the learners' step ``seed``: its rows carry that adapter version, so
    they are on-policy (no importance weights or stale re-scoring, as in the plain loop)."""
    rng = random.Random(seed)
    rows = []
    for q in range(questions):
        for k in range(samples):
            reward = float(rng.random() < 0.5)
            for node in nodes:
                p, t = row_lengths(lengths, rng, prompt, response, scale)
                rows.append(make_row(
                    node, f"q{q}", k, prompt_ids=[rng.randrange(3, vocab) for _ in range(p)],
                    response_ids=[rng.randrange(3, vocab) for _ in range(t)], logprobs=[0.0] * t,
                    finish_reason="length", adapter_version=seed, reward=reward))
    return to_record_batch(rows)


def bench_config(micro_batch: int, mode: str = "per_node", **options) -> Config:
    cfg = Config()
    # gap check off: the synthetic logprobs are not the model's (this measures speed only)
    learner = dataclasses.replace(cfg.learner, micro_batch_size=micro_batch, max_logprob_gap=1e9, baseline="loo",
                                  micro_batches=mode, **options)
    return dataclasses.replace(cfg, learner=learner)


def deepspeed_step(rank: LearnerRank, batch) -> float:
    t0 = time.perf_counter()
    rank.accumulate(batch)
    rank.finish_step()
    return time.perf_counter() - t0


class PlainLoop:
    """The same step without DeepSpeed: PEFT model, loss.backward into .grad, torch AdamW."""

    def __init__(self, cfg: Config, model_dir: str, nodes: tuple[str, ...]):
        torch.manual_seed(cfg.trainer.seed)
        self.cfg, self.nodes = cfg, nodes
        self.model = build_peft_model(model_dir, nodes, cfg, torch_dtype(cfg)).train()
        if torch.cuda.is_available():
            self.model = self.model.to("cuda")
        self.params = [p for n, p in self.model.named_parameters() if "lora_" in n]
        for p in self.params:
            p.requires_grad_(True)
        self.opt = torch.optim.AdamW(self.params, lr=cfg.learner.lr)

    def step(self, batch) -> float:
        t0 = time.perf_counter()
        rows = [Row(r["node"], r["question_id"], r["sample_index"], r["prompt_ids"], r["response_ids"],
                    r["logprobs"], r["adapter_version"], r["reward"]) for r in batch.to_pylist()]
        adv = self._loo(rows)
        denom = sum(len(r.response) for r in rows)
        mbs = self.cfg.learner.micro_batch_size
        for node in self.nodes:
            mine = [(r, a) for r, a in zip(rows, adv) if r.node == node]
            self.model.set_adapter(node)
            for p in self.params:
                p.requires_grad_(True)
            for i in range(0, len(mine), mbs):
                self._micro(mine[i:i + mbs], denom)
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.learner.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    @staticmethod
    def _loo(rows: list[Row]) -> list[float]:
        groups: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(rows):
            groups.setdefault((r.question_id, r.node), []).append(i)
        adv = [0.0] * len(rows)
        for idx in groups.values():
            rew = torch.tensor([rows[i].reward for i in idx])
            for i, a in zip(idx, algos.advantages(rew, algos.loo_baseline(rew)).tolist()):
                adv[i] = a
        return adv

    def _micro(self, chunk, denom: int) -> None:
        """Right-padded rows, every position's logits, the response positions gathered:
        the loop as a transformers + PEFT user writes it."""
        rows = [r for r, _ in chunk]
        dev = next(self.model.parameters()).device
        x = build_inputs(rows, packed=False).to(dev)
        logits = self.model(input_ids=x.ids, attention_mask=x.attn).logits
        lp = torch.zeros(x.shape, device=dev).index_put((x.row, x.col),
                                                        algos.token_logprobs(gathered(logits, x), x.tok))
        adv = torch.tensor([a for _, a in chunk], device=dev)
        mask = x.mask().to(dev)
        coef = algos.token_coefficients(mask, "token")
        (algos.reinforce_terms(lp, adv, torch.ones_like(lp), coef) / denom).backward()


def measure(nodes: int, args: argparse.Namespace, model_dir: str, vocab: int) -> dict:
    """Per-node, mixed and plain learners on the same batches, steps alternating."""
    names = node_names(nodes)
    batches = [make_batch(s, vocab, args.questions, args.samples, args.prompt, args.response, names)
               for s in range(args.steps + 1)]
    learners = {}
    for mode in ("per_node", "mixed"):
        rank = LearnerRank(bench_config(args.micro_batch, mode), model_dir, names)
        rank.setup()
        learners[f"deepspeed_{mode}"] = lambda b, rank=rank: deepspeed_step(rank, b)
    learners["plain_peft"] = PlainLoop(bench_config(args.micro_batch), model_dir, names).step
    pass_rows = [int(n) for n in args.pass_rows.split(",") if n]
    for n in pass_rows:
        rank = LearnerRank(bench_config(n), model_dir, names)
        rank.setup()
        learners[f"deepspeed_per_node_{n}_rows"] = lambda b, rank=rank: deepspeed_step(rank, b)
    times: dict[str, list[float]] = {name: [] for name in learners}
    profiles = {name: cProfile.Profile() for name in learners} if args.profile else {}
    for i, batch in enumerate(batches):
        for name, step in learners.items():
            prof = profiles.get(name) if i else None  # batch 0 warms up allocators and first-call paths
            if prof:
                prof.enable()
            t = step(batch)
            if prof:
                prof.disable()
            if i:
                times[name].append(t)
    for name, prof in profiles.items():
        print(f"== {nodes} nodes, {name}: {sum(times[name]):.3f} s over {len(times[name])} steps")
        pstats.Stats(prof).sort_stats("tottime").print_stats(4)
    tokens = batches[0].num_rows * (args.prompt + args.response)
    tps = {name: tokens / statistics.median(t) for name, t in times.items()}
    out = {"nodes": nodes, "widths": list(WIDTHS[nodes]), "rows_per_step": batches[0].num_rows,
           "tokens_per_step": tokens, "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
           "mixed_over_per_node": round(tps["deepspeed_mixed"] / tps["deepspeed_per_node"], 3),
           "deepspeed_over_plain": round(tps["deepspeed_per_node"] / tps["plain_peft"], 3),
           "step_s": {k: [round(t, 3) for t in v] for k, v in times.items()}}
    if len(pass_rows) > 1:
        small, large = min(pass_rows), max(pass_rows)
        out["pass_merge_ceiling"] = round(tps[f"deepspeed_per_node_{large}_rows"]
                                          / tps[f"deepspeed_per_node_{small}_rows"], 3)
    return out


# The learner's options, each on top of the defaults; "before" is the learner before them.
OPTIONS = {
    "before": dict(logits="full", max_tokens_per_micro_batch=0, padding_free="off"),
    "response_logits": dict(logits="response", max_tokens_per_micro_batch=0, padding_free="off"),
    "chunked_logits": dict(logits="chunked", max_tokens_per_micro_batch=0, padding_free="off"),
    "token_budget": dict(logits="chunked", padding_free="off"),
    "token_budget_packed": dict(logits="chunked", padding_free="on"),
}


class PassLog:
    """The row lengths of every pass a learner runs: wraps the ``_micro_batch`` of each
    step's ``StepGradients`` (a rank makes a fresh one per step)."""

    def __init__(self, rank: LearnerRank):
        self.passes: list[list[int]] = []
        reset = rank._reset_step

        def reset_and_log() -> None:
            reset()
            inner = rank.grads._micro_batch

            def logged(rows):
                self.passes.append([len(r.prompt) + len(r.response) for r in rows])
                return inner(rows)

            rank.grads._micro_batch = logged

        rank._reset_step = reset_and_log
        reset_and_log()


def measure_options(args: argparse.Namespace, model_dir: str, vocab: int) -> dict:
    """The plain loop and the learner under each option on the same batches, steps
    alternating; real (non-pad) tokens/s, the pad share of the passes, peak memory of a step."""
    from benchmarks.learner_memory import peak_bytes

    names = node_names(int(args.nodes.split(",")[0]))
    batches = [make_batch(s, vocab, args.questions, args.samples, args.prompt, args.response, names,
                          args.lengths, args.length_scale) for s in range(args.steps + 2)]
    steps, logs = {"plain_peft": PlainLoop(bench_config(args.micro_batch), model_dir, names).step}, {}
    for name in args.options.split(","):
        options = {**OPTIONS[name], **({"max_tokens_per_micro_batch": args.budget}
                                       if OPTIONS[name].get("max_tokens_per_micro_batch", 1) and args.budget else {})}
        rank = LearnerRank(bench_config(args.micro_batch, **options), model_dir, names)
        rank.setup()
        logs[name] = PassLog(rank)
        steps[name] = lambda b, rank=rank: deepspeed_step(rank, b)
    times: dict[str, list[float]] = {name: [] for name in steps}
    peaks: dict[str, int] = {}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for i, batch in enumerate(batches):
        for name, step in steps.items():
            if i == len(batches) - 1:  # the last batch measures memory (the profiler slows the CPU)
                peaks[name] = peak_bytes(lambda step=step, batch=batch: step(batch), device)
            else:
                t = step(batch)
                if i:  # batch 0 warms up
                    times[name].append(t)
            print(f"batch {i} {name}", flush=True)
    real = sum(len(r["prompt_ids"]) + len(r["response_ids"]) for r in batches[0].to_pylist())
    out = {}
    for name in steps:
        log = logs.get(name)
        packed = name in logs and OPTIONS[name]["padding_free"] == "on"
        out[name] = {"real_tokens_per_s": round(real / statistics.median(times[name]), 1),
                     "step_s": [round(t, 3) for t in times[name]], "peak_mib": round(peaks[name] / 2 ** 20, 1),
                     "passes_per_step": round(len(log.passes) / len(batches), 1) if log else None,
                     "pad_fraction": None if log is None else 0.0 if packed
                     else round(pad_fraction([n for p in log.passes for n in p], log.passes), 3)}
    base = out["before"]["real_tokens_per_s"] if "before" in out else None
    for v in out.values():
        v["over_plain"] = round(v["real_tokens_per_s"] / out["plain_peft"]["real_tokens_per_s"], 3)
        v["over_before"] = round(v["real_tokens_per_s"] / base, 3) if base else None
    return {"nodes": len(names), "real_tokens_per_step": real, "rows_per_step": batches[0].num_rows, "options": out}


def vocab_heavy_model(path: Path) -> str:
    """A random Qwen3 whose vocabulary dominates as at paper scale: Qwen3's 151,936 tokens
    on a 2-layer, 256-wide body (a 0.6B model's lm_head is a quarter of its FLOPs)."""
    from benchmarks.random_model import random_model_dir

    if (path / "config.json").exists():
        return str(path)
    arch = path.parent / "vocab_heavy.arch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    arch.write_text(json.dumps({
        "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 256, "intermediate_size": 768,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
        "tie_word_embeddings": True, "max_position_embeddings": 4096}))
    return str(random_model_dir(path, arch, torch.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="model dir (default: the built tiny Qwen3)")
    ap.add_argument("--arch", default="", choices=("", "vocab-heavy"),
                    help="vocab-heavy: a random 2-layer, 256-wide Qwen3 with Qwen3's 151,936-token vocabulary")
    ap.add_argument("--steps", type=int, default=5, help="timed steps of each learner")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--nodes", default="3,7", help="graph sizes: 3 = [2, 1], 7 = [4, 2, 1]")
    ap.add_argument("--questions", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--response", type=int, default=24)
    ap.add_argument("--lengths", default="equal", choices=("equal", "gsm8k-like"),
                    help="row lengths: --prompt/--response for all, or GSM8K-like (100-400 + 50-512) times "
                         "--length-scale")
    ap.add_argument("--length-scale", type=float, default=1.0)
    ap.add_argument("--micro-batch", type=int, default=32)
    ap.add_argument("--options", default="",
                    help=f"compare the learner's options ({','.join(OPTIONS)}) with the plain loop instead of "
                         "per-node/mixed passes (first graph of --nodes)")
    ap.add_argument("--budget", type=int, default=0, help="learner.max_tokens_per_micro_batch of the budget options "
                                                         "(0 = the default)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "learner_throughput.json"))
    ap.add_argument("--profile", action="store_true", help="also print each learner's top cProfile entries")
    ap.add_argument("--pass-rows", default="", help="also per-node learners with these micro-batch sizes, e.g. 8,32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = args.model or (vocab_heavy_model(REPO / ".cache" / "vocab_heavy") if args.arch else str(_tiny()))
    vocab = json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"]
    cfg = bench_config(args.micro_batch)
    if args.options:
        result = {"options": measure_options(args, model_dir, vocab)}
        for name, v in result["options"]["options"].items():
            print(f"{name:22s} {v['real_tokens_per_s']:10,.0f} real tokens/s  x{v['over_plain']:.2f} plain  "
                  f"peak {v['peak_mib']:8.1f} MiB  pad {v['pad_fraction']}")
    else:
        result = {"graphs": [measure(int(n), args, model_dir, vocab) for n in args.nodes.split(",")]}
        for g in result["graphs"]:
            print(f"{g['nodes']} nodes: " + "   ".join(f"{k} {v:,.0f} tokens/s" for k, v in g["tokens_per_s"].items())
                  + f"   mixed/per-node {g['mixed_over_per_node']:.3f}"
                  + (f"   pass-merge ceiling {g['pass_merge_ceiling']:.3f}" if "pass_merge_ceiling" in g else ""))
    result["settings"] = {**vars(args), "model": model_dir, "zero_stage": cfg.learner.zero_stage,
                          "lora_rank": cfg.lora.rank, "targets": list(cfg.lora.target_modules),
                          "dtype": str(torch_dtype(cfg)), "world_size": 1,
                          "device": "cuda" if torch.cuda.is_available() else "cpu",
                          "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def _tiny() -> Path:
    from neuromas_dist.models.tiny import ensure_tiny_model

    return ensure_tiny_model()


if __name__ == "__main__":
    main()
