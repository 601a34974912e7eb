"""``python -m neuromas_dist.evaluate RUN_DIR``: held-out evaluation of a run's final adapters.

Loads ``RUN_DIR/adapters`` (PEFT layout) into a vLLM rollout worker under Ray and writes
``RUN_DIR/eval/``: greedy and sampled accuracy with 95% intervals, node ablation, what each
node writes, plots, ``report.json`` and ``report.md`` (keys in :mod:`analysis.report`).
Works on any run directory, local or copied from a cluster; a bad path or a run without
adapters is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m neuromas_dist.evaluate", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (config.yaml + adapters/)")
    p.add_argument("--samples", type=_count, default=None,
                   help="sampled passes per question (default: the run's trainer.eval_samples)")
    p.add_argument("--questions", type=_count, default=None,
                   help="held-out questions (default: the run's data.n_eval)")
    p.add_argument("--no-ablation", action="store_true", help="skip the per-node ablation passes")
    return p


def _count(text: str) -> int:
    """argparse type: an integer >= 0 (argparse turns the error into one usage line, exit 2)."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


class InputError(ValueError):
    """A run directory that cannot be evaluated; the message is one line."""


def check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: no such directory")
    if not (run_dir / "config.yaml").is_file():
        raise InputError(f"{run_dir}: no config.yaml (not a run directory)")
    adapters = run_dir / "adapters"
    if not adapters.is_dir() or not any(adapters.glob("*/adapter_model.safetensors")):
        raise InputError(f"{run_dir}: no adapters/ with PEFT adapters (the run has not finished; "
                         f"its checkpoints are under checkpoints/)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    from neuromas_dist.analysis.run_eval import evaluate_run_dir, prepare

    try:
        check_run_dir(run_dir)
        prepared = prepare(_config(run_dir, args), run_dir)
    except (ValueError, FileNotFoundError) as exc:  # InputError, ConfigError, DataError, TopologyError
        print(f"evaluate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = evaluate_run_dir(prepared, run_dir, samples=prepared.cfg.trainer.eval_samples,
                              ablate=not args.no_ablation)
    acc = report["accuracy"]["greedy"]
    print(f"[evaluate] {run_dir}: greedy accuracy {acc['mean']:.3f} [{acc['ci_lo']:.3f}, {acc['ci_hi']:.3f}] "
          f"on {report['questions']} questions; report in {run_dir / 'eval'}")
    return 0


def _config(run_dir: Path, args: argparse.Namespace):
    """The run's own config, with the evaluation's overrides; errors name the key."""
    from neuromas_dist.config import ConfigError, load_config

    overrides = [f"logging.run_dir={run_dir}"]
    if args.samples is not None:
        overrides.append(f"trainer.eval_samples={args.samples}")
    if args.questions is not None:
        overrides.append(f"data.n_eval={args.questions}")
    try:
        return load_config(run_dir / "config.yaml", overrides)
    except ConfigError as exc:
        raise InputError(f"{run_dir / 'config.yaml'}: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
