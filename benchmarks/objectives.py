"""The objectives side by side on the toy default: ``python -m benchmarks.objectives``.

Each arm is the default run (``configs/default.yaml``: NeuroMAS-3 on the tiny model,
30 steps of 16 questions x 8 samples) with one learner change, trained for every seed,
one ``neuromas_dist.launch`` process per run (``runs/objectives/<arm>/seed<k>/``; a rerun
skips finished runs). Every arm keeps the default learning rate (learner.lr = 2e-3): no
arm is tuned. The choices an arm needs are stated here once:

* ``reinforce``: the paper's joint REINFORCE, leave-one-out baseline (the default);
* ``reinforce_std``: the same, advantages divided by the question's reward std (GRPO's);
* ``ppo_clip``: PPO's clipped ratio at 0.2 / 0.2, 2 epochs of 1 optimiser step each;
* ``reinforce_kl``: k3 KL to the base model at 0.01 (OpenRLHF's initial KL coefficient);
* ``reinforce_tis``: token-level truncated importance sampling at C = 2 on every row.

Reported per arm: greedy held-out accuracy on the 500 questions before and after, the
paired gain with a 95% bootstrap over seeds and questions, the first held-out evaluation
(steps 15 and 30) at 0.9 or more, wall time and the learner's time per step. Writes
``benchmarks/results/objectives.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.neuromas_table.runner import RunFailed, run_command, wall_seconds
from neuromas_dist.analysis.evaluation import sink_scores
from neuromas_dist.analysis.run_eval import BEFORE, FINAL, load_pass, step_pass_name
from neuromas_dist.analysis.stats import paired_seeds_diff_ci, seeds_ci
from neuromas_dist.graph.topology import parse_node_name

ARMS = {
    "reinforce": [],
    "reinforce_std": ["learner.advantage_norm=std"],
    "ppo_clip": ["learner.objective=ppo_clip", "learner.epochs=2", "learner.clip_low=0.2", "learner.clip_high=0.2"],
    "reinforce_kl": ["learner.kl_coef=0.01", "learner.kl_estimator=k3"],
    "reinforce_tis": ["learner.rollout_correction=tis_token", "learner.correction_cap=2.0"],
}
# beside TRL (--peer trl): one node, one LoRA, as TRL trains one model
PEER_ARMS = {
    "single": ["topology.widths=[1]"],
    "single_std": ["topology.widths=[1]", "learner.advantage_norm=std"],
}
TARGET = 0.9
RESULTS = Path(__file__).parent / "results"


def command(arm: str, seed: int, root: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "neuromas_dist.launch", "--run-dir", str(root / arm / f"seed{seed}"),
            f"trainer.seed={seed}", *{**ARMS, **PEER_ARMS}[arm], *extra, "logging.progress=false"]


def greedy_scores(directory: Path, name: str) -> np.ndarray | None:
    """Per-question greedy scores of a saved held-out pass (sorted question ids), or None."""
    loaded = load_pass(directory, name)
    if loaded is None:
        return None
    passes, nodes = loaded
    sink = max(nodes, key=parse_node_name)
    return sink_scores(passes.greedy, sink, sorted(set(passes.greedy["question_id"].to_pylist())))[:, 0]


def run_timing(directory: Path) -> dict[str, float]:
    """Seconds per training step (held-out passes left out), of which the learner's, and
    generated tokens per second of those steps."""
    rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "timing_s/learn" in r]
    step_s = [r["timing_s/step"] - r.get("timing_s/eval", 0.0) for r in steps]
    tokens = sum(r.get("rollout/response_tokens", 0.0) for r in steps)
    return {"step_s": float(np.mean(step_s)), "learner_s": float(np.mean([r["timing_s/learn"] for r in steps])),
            "tokens_per_s": tokens / sum(step_s)}


DIAGNOSTICS = ("clip_frac", "kl_base", "corrected_token_frac", "ratio_max", "entropy", "grad_norm")


def diagnostics(directory: Path) -> dict[str, float]:
    """What each option did, averaged over the run's steps and nodes (ratio_max: the
    largest): the clipped share, the KL to the base, the corrected share, the learner /
    rollout ratio, the entropy, the gradient norm."""
    rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines() if line.strip()]
    out: dict[str, float] = {}
    for name in DIAGNOSTICS:
        values = [v for r in rows for k, v in r.items() if k.endswith(f"/{name}") and v is not None]
        if values:
            out[name] = round(float(max(values) if name == "ratio_max" else np.mean(values)), 5)
    return out


def accuracy_summary(before: np.ndarray, after: np.ndarray) -> dict:
    """[seeds, questions] greedy scores before and after: both with CIs, the paired gain."""
    return {"before": seeds_ci(before).as_dict(), "after": seeds_ci(after).as_dict(),
            "gain": paired_seeds_diff_ci(after, before).as_dict(),
            "after_per_seed": [round(float(a.mean()), 3) for a in after]}


def arm_result(root: Path, arm: str, seeds: list[int], steps: int, eval_every: int) -> dict:
    dirs = [root / arm / f"seed{s}" for s in seeds]
    before = np.stack([greedy_scores(d, BEFORE) for d in dirs])
    after = np.stack([greedy_scores(d, FINAL) for d in dirs])
    checkpoints = [k for k in range(eval_every, steps, eval_every)] if eval_every else []
    reached = []
    for d, a in zip(dirs, after):
        passes = [(k, greedy_scores(d, step_pass_name(k))) for k in checkpoints] + [(steps, a)]
        reached.append(next((k for k, s in passes if s is not None and s.mean() >= TARGET), None))
    return {"overrides": {**ARMS, **PEER_ARMS}[arm], "seeds": seeds, **accuracy_summary(before, after),
            "first_eval_step_at_target": reached,
            "wall_s": [round(wall_seconds(d), 1) for d in dirs],
            **{k: [round(run_timing(d)[k], 2) for d in dirs] for k in ("step_s", "learner_s", "tokens_per_s")},
            "diagnostics": [diagnostics(d) for d in dirs]}


def versus(root: Path, arms: list[str], seeds: list[int]) -> dict:
    """Each arm minus the first (the paper's), paired on the same seeds and questions."""
    final = {a: np.stack([greedy_scores(root / a / f"seed{s}", FINAL) for s in seeds]) for a in arms}
    return {a: paired_seeds_diff_ci(final[a], final[arms[0]]).as_dict() for a in arms[1:]}


def table(results: dict) -> str:
    def ci(e: dict, sign: str = "") -> str:
        return f"{e['mean']:{sign}.3f} [{e['ci_lo']:{sign}.3f}, {e['ci_hi']:{sign}.3f}]"

    lines = ["| arm | greedy before | greedy after | paired gain, 95% CI | after, per seed | first eval >= 0.9 "
             "| wall per run | learner s / step |", "|---|---|---|---|---|---|---|---|"]
    for arm, r in results["arms"].items():
        reached = ", ".join("-" if k is None else str(k) for k in r["first_eval_step_at_target"])
        lines.append(f"| `{arm}` | {ci(r['before'])} | {ci(r['after'])} | {ci(r['gain'], '+')} | "
                     f"{' / '.join(map(str, r['after_per_seed']))} | {reached} | "
                     f"{np.mean(r['wall_s']) / 60:.1f} min | {np.mean(r['learner_s']):.2f} |")
    first = next(iter(results["arms"]))
    lines += ["", f"| arm | greedy after minus `{first}`'s, paired, 95% CI |", "|---|---|"]
    lines += [f"| `{arm}` | {ci(d, '+')} |" for arm, d in results.get("vs_first_arm", {}).items()]
    lines += ["", "| arm | " + " | ".join(DIAGNOSTICS) + " |", "|---" * (len(DIAGNOSTICS) + 1) + "|"]
    for arm, r in results["arms"].items():
        cells = []
        for name in DIAGNOSTICS:
            values = [d[name] for d in r["diagnostics"] if name in d]
            value = max(values, default=0.0) if name == "ratio_max" else np.mean(values) if values else 0.0
            cells.append("-" if not values else f"{value:.6g}" if name == "ratio_max" else f"{value:.4g}")
        lines.append(f"| `{arm}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def trl_result(extra: list[str], seeds: list[int], root: Path) -> dict:
    """TRL's GRPOTrainer on the single-node toy (benchmarks/trl_peer.py), every seed."""
    from benchmarks import trl_peer
    from neuromas_dist.config import load_config

    runs = [trl_peer.run(load_config(None, [*extra, f"trainer.seed={s}", *PEER_ARMS["single"]]),
                         root / "trl" / f"seed{s}", seed=s) for s in seeds]
    before, after = np.stack([r["before"] for r in runs]), np.stack([r["after"] for r in runs])
    return {"seeds": seeds, **accuracy_summary(before, after),
            "step_s": [round(r["wall_s"] / r["steps"], 2) for r in runs],
            "tokens_per_s": [round(r["generated_tokens"] / r["wall_s"], 1) for r in runs],
            "loss_type": runs[0]["loss_type"], "scale_rewards": runs[0]["scale_rewards"],
            "train_reward": [r["train_reward"] for r in runs]}


def peer_table(results: dict) -> str:
    lines = ["| trainer, arm | greedy before | greedy after | paired gain, 95% CI | s / step | generated tokens / s |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['before']['mean']:.3f} | {r['after']['mean']:.3f} | {r['gain']['mean']:+.3f} "
                     f"[{r['gain']['ci_lo']:+.3f}, {r['gain']['ci_hi']:+.3f}] | {np.mean(r['step_s']):.2f} | "
                     f"{np.mean(r['tokens_per_s']):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs/objectives", help="where the runs go")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default=",".join(ARMS), help=f"a subset of {list(ARMS)}")
    p.add_argument("--peer", choices=("trl",), help="instead: TRL's GRPOTrainer beside our single-node arms "
                   f"{list(PEER_ARMS)} (needs the bench extra)")
    p.add_argument("--steps", type=int, default=30, help="trainer.steps (the default run's 30)")
    p.add_argument("--eval-every", type=int, default=15, help="trainer.eval_every (the default run's 15)")
    p.add_argument("--out", help="results path without suffix (default benchmarks/results/objectives[_trl])")
    p.add_argument("overrides", nargs="*", help="key=value for every arm (e.g. a smaller run)")
    args = p.parse_args(argv)
    root, seeds = Path(args.runs), [int(s) for s in args.seeds.split(",")]
    arms = list(PEER_ARMS) if args.peer else args.arms.split(",")
    unknown = sorted(set(arms) - set(ARMS) - set(PEER_ARMS))
    if unknown:
        print(f"objectives: unknown arm(s) {unknown}; known: {list(ARMS)}", file=sys.stderr)
        return 2
    extra = [f"trainer.steps={args.steps}", f"trainer.eval_every={args.eval_every}", *args.overrides]
    say = lambda msg: print(f"[objectives] {msg}", flush=True)  # noqa: E731
    try:
        for seed in seeds:  # seed-major: an interrupted sweep has every arm at some seeds
            for arm in arms:
                run_command(root / arm / f"seed{seed}", command(arm, seed, root, extra), f"{arm} seed {seed}", say)
    except RunFailed as exc:
        print(f"objectives: {exc}", file=sys.stderr)
        return 1
    results = {"command": " ".join(sys.argv), "seeds": seeds, "shared_overrides": extra, "target": TARGET,
               "arms": {a: arm_result(root, a, seeds, args.steps, args.eval_every) for a in arms},
               "vs_first_arm": versus(root, arms, seeds)}
    text = table(results)
    if args.peer:
        say("TRL GRPOTrainer ...")
        results["trl"] = trl_result(extra, seeds, root)
        ours = {f"ours, `{a}`": r for a, r in results["arms"].items()}
        text = peer_table({**ours, "TRL `GRPOTrainer`": results["trl"]})
    out = Path(args.out or RESULTS / ("objectives_trl" if args.peer else "objectives"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
