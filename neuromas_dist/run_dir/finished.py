"""A finished run made ready to run here: its config (with a command's overrides), the
shape its adapters belong to (a grown run's last), the adapters, the step it ended at.
Everything that can be wrong with the directory is found here, before Ray starts."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch

from neuromas_dist.adapters.peft_io import AdapterSet, read_adapter_set
from neuromas_dist.analysis.run_eval import RunShape, describe, run_shape
from neuromas_dist.config import Config
from neuromas_dist.run_dir import RunDirError, check_run_dir, read_metrics, run_config, run_summary


class FinishedRun(NamedTuple):
    path: Path
    cfg: Config  # the run's config and overrides, made to run here (``local_config``)
    topology: RunShape  # the graph (or program) the adapters belong to
    adapters: AdapterSet  # RUN_DIR/adapters at version 1: above a fresh worker's placeholder, so its load takes
    step: int  # the step the run ended at (-1: no summary.json)

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path / "metrics.jsonl")


def open_run(run_dir: Path, overrides: Sequence[str] = ()) -> FinishedRun:
    """Check, read and cross-check a finished run; RunDirError (one line) when it cannot be used."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    cfg = run_config(run_dir, overrides)
    topology = run_topology(cfg, run_dir)
    try:
        adapters = read_adapter_set(run_dir / "adapters", version=1)
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{run_dir}/adapters: {exc}") from None
    if set(adapters.tensors) != set(topology.names):
        raise RunDirError(f"{run_dir}/adapters holds {', '.join(sorted(adapters.tensors))} but the run's "
                          f"{describe(topology)} has {', '.join(topology.names)}")
    return FinishedRun(run_dir, local_config(cfg), topology, adapters, int(run_summary(run_dir).get("steps", -1)))


def run_topology(cfg: Config, run_dir: Path) -> RunShape:
    """The graph the run ended with: summary.json's widths (a run may have grown), with
    the config's edges when the widths are the configured ones; a program's agents."""
    widths = run_summary(run_dir).get("topology")
    return run_shape(cfg, tuple(widths or cfg.topology.widths))


def local_config(cfg: Config) -> Config:
    """One rollout worker; the run's cluster address dropped (RAY_ADDRESS still joins
    one), and no GPU asked for where none is visible (a run dir copied off a cluster)."""
    resources = dataclasses.replace(cfg.resources, ray_address="")
    if not torch.cuda.is_available() and not os.environ.get("RAY_ADDRESS"):
        resources = dataclasses.replace(resources, rollout_gpus=0.0, learner_gpus=0.0, colocate=False)
    return dataclasses.replace(cfg, resources=resources, rollout=dataclasses.replace(cfg.rollout, num_workers=1))
