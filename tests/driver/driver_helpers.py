"""Shared by the end-to-end driver tests: a run small enough for a minute on 2 cores.
(24 new tokens: the sink's reply on the default task is 20; shorter cuts every answer.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from small_run import SMALL_RUN as SMALL  # noqa: F401 - re-exported for the driver tests


def metrics(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl ([] before the first one is written)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wandb_history(run_dir: Path, run_id: str) -> list[dict]:
    """The history rows of an offline W&B run, read from its .wandb file with wandb's own reader."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    (path,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    store, rows = DataStore(), []
    store.open_for_scan(str(path))
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
    return rows


def mlflow_history(run_dir: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"file://{run_dir}/mlruns")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def check_trackers(run_dir: Path, rows: list[dict], key: str) -> None:
    """What ``rows`` logged under ``key`` is what W&B's and MLflow's files hold."""
    ids = json.loads((run_dir / "trackers.json").read_text())
    want = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    assert want and mlflow_history(run_dir, ids["mlflow"], key) == pytest.approx(want)
    got = [(h["_step"], h[key]) for h in wandb_history(run_dir, ids["wandb"]) if key in h]
    assert got == pytest.approx(want)
