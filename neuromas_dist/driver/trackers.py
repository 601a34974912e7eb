"""Experiment trackers behind the metrics logger: Weights & Biases and MLflow, each optional.

Every row the run logs (``metrics.jsonl``) goes to each tracker the config turns on,
numbers only, at the run's step. A tracker's run id is kept in ``RUN_DIR/trackers.json``,
so ``--resume`` continues the same tracker run. Trackers cannot forget: the steps a resume
redoes are logged again (W&B keeps the first value of a step it has seen and drops the
repeat with a warning; MLflow keeps both, at the same step). ``metrics.jsonl`` stays the
record that is cut back exactly.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol, cast

from neuromas_dist.config import Config


class Tracker(Protocol):
    def log(self, step: int, row: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def numbers(row: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _ids(run_dir: Path) -> dict[str, str]:
    path = run_dir / "trackers.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_id(run_dir: Path, name: str, run_id: str) -> None:
    ids = _ids(run_dir)
    ids[name] = run_id
    (run_dir / "trackers.json").write_text(json.dumps(ids, indent=1) + "\n")


def run_name(cfg: Config, run_dir: Path) -> str:
    return cfg.logging.run_name or Path(run_dir).resolve().name


class WandbTracker:
    """A W&B run (``logging.wandb_mode=offline`` writes it under RUN_DIR/wandb for ``wandb sync``)."""

    def __init__(self, cfg: Config, run_dir: Path):
        import wandb

        lg = cfg.logging
        mode = cast(Literal["online", "offline"], lg.wandb_mode)  # the config allows only these
        self.run = wandb.init(project=lg.wandb_project, name=run_name(cfg, run_dir), tags=list(lg.tags),
                              config=dataclasses.asdict(cfg), dir=str(run_dir), mode=mode,
                              id=_ids(run_dir).get("wandb"), resume="allow", reinit="finish_previous")
        _save_id(run_dir, "wandb", self.run.id)

    def log(self, step: int, row: Mapping[str, Any]) -> None:
        self.run.log(numbers(row), step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    """An MLflow run in ``logging.mlflow_experiment`` at ``logging.mlflow_tracking_uri`` (a
    server, or ``file:///path`` for a local store)."""

    def __init__(self, cfg: Config, run_dir: Path):
        lg = cfg.logging
        if lg.mlflow_tracking_uri.startswith("file:"):
            # MLflow 3 keeps its file store in maintenance and refuses it unless asked; a
            # file:// URI in the config is that ask (a local store, no server)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=lg.mlflow_tracking_uri)
        run_id = _ids(run_dir).get("mlflow")
        if run_id is None:
            experiment = self.client.get_experiment_by_name(lg.mlflow_experiment)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else self.client.create_experiment(lg.mlflow_experiment))
            tags = {"mlflow.runName": run_name(cfg, run_dir), **{t: "" for t in lg.tags}}
            run_id = self.client.create_run(experiment_id, tags=tags).info.run_id
            self.client.log_dict(run_id, dataclasses.asdict(cfg), "config.json")
            _save_id(run_dir, "mlflow", run_id)
        self.run_id = run_id

    def log(self, step: int, row: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in numbers(row).items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def from_config(cfg: Config, run_dir: Path) -> list[Tracker]:
    """The trackers ``cfg.logging`` turns on; a missing library is one clear error."""
    lg = cfg.logging
    out: list[Tracker] = []
    for on, module, make, extra in ((lg.wandb_project, "wandb", WandbTracker, "wandb"),
                                    (lg.mlflow_tracking_uri, "mlflow", MlflowTracker, "mlflow-skinny")):
        if not on:
            continue
        try:
            __import__(module)
        except ImportError:
            raise TrackerError(f"logging: {module} is not installed (pip install {extra}, or the `track` "
                               f"extra)") from None
        try:
            out.append(make(cfg, Path(run_dir)))
        except Exception as exc:  # noqa: BLE001 - no key, no server, a bad URI: one line, not a trace
            first = (str(exc).strip().splitlines() or [""])[0]
            raise TrackerError(f"logging: {module} could not start ({type(exc).__name__}: {first})") from None
    return out


class TrackerError(RuntimeError):
    """A tracker the config asks for cannot start; the message is one line."""
