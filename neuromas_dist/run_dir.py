"""A finished run directory as the commands that read one take it (``evaluate``, ``serve``,
``generate``): checked first, its own config with the command's overrides. Errors are one
line naming the path or the key."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

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
