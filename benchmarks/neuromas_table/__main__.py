"""``python -m benchmarks.neuromas_table``: train every arm for every seed, then write the table.

    python -m benchmarks.neuromas_table                       # the CPU table (configs/neuromas_table_tiny.yaml)
    python -m benchmarks.neuromas_table --quick               # every arm, a few steps, tiny sizes (minutes)
    ray job submit --working-dir . -- python -m benchmarks.neuromas_table \\
        --config configs/neuromas3_qwen3-0.6b_gsm8k.yaml      # paper scale, same arms

Small steps C = the config's trainer.steps; large steps D = 2C unless --large-steps.
Outputs: <out>/neuromas_table.{json,md,png}; runs under <runs>/<arm>/seed<k>/ (kept, so a
rerun skips finished runs and continues an interrupted table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

from benchmarks.neuromas_table.arms import TableSpec, build_arms, matched_rank, nodes
from benchmarks.neuromas_table.plots import plot_table
from benchmarks.neuromas_table.report import render_markdown
from benchmarks.neuromas_table.results import collect, curves
from benchmarks.neuromas_table.runner import RunFailed, run_arm
from neuromas_dist.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "configs" / "neuromas_table_tiny.yaml"
# --quick: every arm end to end on the real stack, at sizes that take minutes on 2 cores.
QUICK = ("trainer.steps=2", "trainer.questions_per_step=2", "sampling.n_samples=2", "data.n_eval=10",
         "trainer.checkpoint_every=0", "logging.plots=false", "trainer.growth_fade_steps=1")


def say(msg: str) -> None:
    print(f"[table] {msg}", flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.neuromas_table", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help=f"the NeuroMAS-3 config every arm derives from (default {DEFAULT_CONFIG.name})")
    p.add_argument("--seeds", type=int, default=3, help="training seeds 0..N-1 of every trained arm (default 3)")
    p.add_argument("--large-steps", type=int, help="D: NeuroMAS-7 steps (default twice trainer.steps)")
    p.add_argument("--quick", action="store_true",
                   help="every arm for a few steps at tiny sizes, each run in this process on one embedded Ray")
    p.add_argument("--runs", help="where the runs go (default runs/neuromas_table[_quick])")
    p.add_argument("--out", help="where the table goes (default benchmarks/results, or the runs dir with --quick)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="config overrides for every arm")
    return p


def plan(args: argparse.Namespace) -> tuple[str, Config, TableSpec, list[str], Path, Path]:
    """Config path, config, spec, overrides of every arm, runs dir, output dir; all checked
    before any run starts. Raises ConfigError / ValueError."""
    config = args.config or str(DEFAULT_CONFIG)
    extra = [*(QUICK if args.quick else ()), *args.overrides]
    cfg = load_config(config, extra)
    small = cfg.trainer.steps
    large = args.large_steps or (small + 1 if args.quick else 2 * small)
    spec = TableSpec(small, large, tuple(range(args.seeds)), tuple(cfg.topology.widths)).validate()
    if args.quick:  # the runs share this process: one set of engines, sized for the largest graph, serves them
        extra += ["rollout.keep_warm=true", f"rollout.max_loras={nodes(spec.large_widths)}"]
    root = Path(args.runs or ("runs/neuromas_table_quick" if args.quick else "runs/neuromas_table"))
    out = Path(args.out) if args.out else (root if args.quick else REPO / "benchmarks" / "results")
    return config, cfg, spec, extra, root, out


def model_config(cfg: Config):
    """The architecture the LoRA counts come from: a hub model's shapes from its
    ``model.arch_config`` (configs/arch, nothing downloaded), anything local (the tiny model, a
    model dir) from its config.json."""
    from transformers import AutoConfig

    from neuromas_dist.adapters.counting import arch_config
    from neuromas_dist.rollout.worker import resolve_model_dir

    if cfg.model.arch_config:
        return arch_config(REPO / cfg.model.arch_config)
    return AutoConfig.from_pretrained(resolve_model_dir(cfg), trust_remote_code=cfg.model.trust_remote_code)


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} logical CPUs, {gpu}".replace("  ", " ")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config, cfg, spec, extra, root, out = plan(args)
        matched = matched_rank(cfg, model_config(cfg))
        arms = build_arms(cfg, spec, matched)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"table error: {exc}", file=sys.stderr)
        return 2
    say(f"{len(arms)} arms x {len(spec.seeds)} seeds; C={spec.small_steps}, D={spec.large_steps}; "
        f"single-LLM rank {matched.rank} ({matched.single_total:,} LoRA params) vs NeuroMAS-3 "
        f"3 x rank {cfg.lora.rank} ({matched.small_total:,}); runs in {root}")
    t0 = time.perf_counter()
    try:
        for seed in spec.seeds:  # seed by seed: an interrupted table has whole seeds done
            for arm in arms:
                run_arm(config, arm, root, seed, extra, say, in_process=args.quick)
    except RunFailed as exc:
        print(f"table error: {exc}", file=sys.stderr)
        return 1
    result = {"command": "python -m benchmarks.neuromas_table " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine(), "config": config,
              "overrides": extra, "spec": {**spec.__dict__, "equal_total_step": spec.equal_total_step,
                                                          "vote_calls": spec.vote_calls},
              "lora": matched._asdict(), "wall_s_this_invocation": time.perf_counter() - t0,
              **collect(root, spec, matched), "curves": curves(root, spec)}
    write(result, out)
    say(f"table: {out / 'neuromas_table.md'}")
    return 0


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "neuromas_table.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "neuromas_table.md").write_text(render_markdown(result))
    plot_table(result, out / "neuromas_table.png")


if __name__ == "__main__":
    sys.exit(main())
