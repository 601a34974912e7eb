"""Entry point:
``python -m neuromas_dist.launch [--config FILE] [--run-dir DIR] [--resume DIR] [--plan] [key.path=value ...]``.

With no config it trains the embedded default (tiny local model, synthetic task, local
Ray). Under ``ray job submit`` or with RAY_ADDRESS set it joins that cluster instead.
``--plan`` prints placement, per-actor memory and sync sizes and starts nothing. A bad
config is one line on stderr and exit code 2; a dead rollout worker or learner rank is
restarted (``faults.*``); Ctrl-C, or a fault past its restart budget, checkpoints and
exits 130 / 1 with one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from neuromas_dist.config import Config, ConfigError, describe, load_config

EXIT_BAD_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m neuromas_dist.launch",
        description="Train a NeuroMAS agent graph with joint REINFORCE (Ray + vLLM + DeepSpeed).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="overrides (key.path=value):\n" + "\n".join(describe()),
    )
    p.add_argument("--config", help="YAML config; omitted = the embedded default")
    p.add_argument("--run-dir", help="run directory (overrides logging.run_dir)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--plan", action="store_true",
                   help="print placement, per-actor GPU memory and adapter sync size for the config; start nothing")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="dotted config overrides")
    return p


def resolve_config(args: argparse.Namespace) -> Config:
    """Config from --resume (its saved config), --config, overrides and --run-dir."""
    path = args.config
    overrides = list(args.overrides)
    if args.resume:
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume {args.resume}: no config.yaml there (not a run directory)")
        path = path or saved
        overrides.append(f"logging.run_dir={args.resume}")
    if args.run_dir:
        overrides.append(f"logging.run_dir={args.run_dir}")
    cfg = load_config(path, overrides)
    if not args.resume and not args.plan:
        check_fresh_run_dir(cfg.logging.run_dir)
    return cfg


def check_fresh_run_dir(run_dir: str) -> None:
    """A new run never writes into another run's directory: its metrics would be appended
    to the old ones and its steps mixed with the old trajectories and checkpoints."""
    if run_dir and (Path(run_dir) / "metrics.jsonl").exists():
        raise ConfigError(f"run directory {run_dir} already holds a run (metrics.jsonl); "
                          f"--resume {run_dir} continues it, or choose another --run-dir")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.plan:
        from neuromas_dist.driver.plan import print_plan

        return print_plan(cfg)
    from neuromas_dist.driver.run import run_training

    return run_training(cfg, resume=bool(args.resume))


if __name__ == "__main__":
    sys.exit(main())
