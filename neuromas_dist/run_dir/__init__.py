"""A run directory, read: the one place that knows its layout.

    RUN_DIR/config.yaml       the run's config          run_config
    RUN_DIR/summary.json      where it ended            run_summary
    RUN_DIR/metrics.jsonl     one row per logged step   read_metrics
    RUN_DIR/adapters/<node>/  the trained PEFT adapters finished.open_run
    RUN_DIR/eval/             the held-out passes and report (analysis/run_eval.py)

This module loads neither torch nor Ray, so the command lines check a path before the stack
loads; ``finished.open_run`` gives a finished run as the commands that use one take it
(``evaluate``, ``serve``, ``generate``). Errors are one line naming the path or the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from neuromas_dist.config import Config, ConfigError, load_config


class RunDirError(ValueError):
    """A run directory that cannot be used; the message is one line."""


def check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such directory")
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir}: no config.yaml (not a run directory)")
    adapters = run_dir / "adapters"
    if not adapters.is_dir() or not any(adapters.glob("*/adapter_model.safetensors")):
        raise RunDirError(f"{run_dir}: no adapters/ with PEFT adapters (the run has not finished; "
                          f"its checkpoints are under checkpoints/)")


def run_config(run_dir: Path, overrides: Sequence[str] = ()) -> Config:
    """The run's own config with ``overrides``."""
    try:
        return load_config(run_dir / "config.yaml", [f"logging.run_dir={run_dir}", *overrides])
    except ConfigError as exc:
        raise RunDirError(f"{run_dir / 'config.yaml'}: {exc}") from None


def run_summary(run_dir: Path) -> dict[str, Any]:
    """summary.json ({} before the run has written one: it is written as the run ends)."""
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl ([] when there is none yet)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
