"""``python -m neuromas_dist.evaluate RUN_DIR [--data FILE] [--out DIR] [key=value ...]``:
evaluation of a run's final adapters.

Loads ``RUN_DIR/adapters`` (PEFT layout) into a vLLM rollout worker under Ray and writes
the report: greedy and sampled accuracy with 95% intervals, node ablation, what each node
writes, plots, ``report.json`` and ``report.md`` (keys in :mod:`analysis.report`). Without
``--data``: the run's own held-out split into ``RUN_DIR/eval``. With ``--data FILE`` (JSONL
or Parquet, the fields training reads: ``data.question_field``/``answer_field``, set as
overrides): that set, into ``--out`` (default ``RUN_DIR/eval_<file name>``; never the run's
own ``eval/`` unless ``--overwrite-eval``). Works on any run directory, local or copied
from a cluster; bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from neuromas_dist.run_dir import RunDirError, check_run_dir, run_config

EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m neuromas_dist.evaluate", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (config.yaml + adapters/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (e.g. data.answer_type=text)")
    p.add_argument("--data", default=None, help="evaluate on this JSONL/Parquet file instead of the run's split")
    p.add_argument("--out", default=None, help="report directory (default: RUN_DIR/eval, or RUN_DIR/eval_<name> "
                                               "with --data)")
    p.add_argument("--overwrite-eval", action="store_true", help="allow --out to be the run's own eval/")
    p.add_argument("--samples", type=_count, default=None,
                   help="sampled passes per question (default: the run's trainer.eval_samples)")
    p.add_argument("--questions", type=_count, default=None,
                   help="questions (default: the run's data.n_eval; with --data all of the file)")
    p.add_argument("--no-ablation", action="store_true", help="skip the per-node ablation passes")
    return p


def _count(text: str) -> int:
    """argparse type: an integer >= 0 (argparse turns the error into one usage line, exit 2)."""
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        check_run_dir(run_dir)
        out = eval_dir(run_dir, args)
        run_config(run_dir, _overrides(args))
        # The stack (Ray, vLLM's worker, torch) loads once the arguments are sound: a typo answers at once.
        from neuromas_dist.driver.evaluation import evaluate_run_dir
        from neuromas_dist.run_dir.finished import open_run
        from neuromas_dist.tasks.data import load_task_data

        run = open_run(run_dir, _overrides(args))
        data = load_task_data(run.cfg.data)
    except (ValueError, FileNotFoundError) as exc:  # RunDirError, ConfigError, DataError, TopologyError
        print(f"evaluate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report = evaluate_run_dir(run, data, samples=run.cfg.trainer.eval_samples, ablate=not args.no_ablation,
                              eval_dir=out)
    acc = report["accuracy"]["greedy"]
    print(f"[evaluate] {run_dir}: greedy accuracy {acc['mean']:.3f} [{acc['ci_lo']:.3f}, {acc['ci_hi']:.3f}] "
          f"on {report['questions']} questions; report in {out}")
    return 0


def eval_dir(run_dir: Path, args: argparse.Namespace) -> Path:
    """Where the report goes; the run's own eval/ only for its own split or when asked."""
    own = run_dir / "eval"
    if args.out is None:
        return own if args.data is None else run_dir / f"eval_{Path(args.data).stem}"
    out = Path(args.out)
    if args.data is not None and out.resolve() == own.resolve() and not args.overwrite_eval:
        raise RunDirError(f"--out {out} is the run's own eval/ (its held-out report); pass --overwrite-eval to "
                          f"replace it with this data set's")
    return out


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    if args.data is not None:
        data = Path(args.data)
        if not data.is_file():
            raise RunDirError(f"--data {data}: no such file")
        # the file task reads a training path too; the set itself is only evaluated
        overrides += ["data.task=file", f"data.train_path={data}", f"data.eval_path={data}",
                      f"data.n_eval={0 if args.questions is None else args.questions}"]
    elif args.questions is not None:
        overrides.append(f"data.n_eval={args.questions}")
    if args.samples is not None:
        overrides.append(f"trainer.eval_samples={args.samples}")
    return overrides


if __name__ == "__main__":
    sys.exit(main())
