"""Shared by the end-to-end driver tests: a run small enough for a minute on 2 cores.
(24 new tokens: the sink's reply on the default task is 20; shorter cuts every answer.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from small_run import SMALL_RUN as SMALL  # noqa: F401 - re-exported for the driver tests

from neuromas_dist.run_dir import read_metrics


def metrics(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl ([] before the first one is written)."""
    return read_metrics(Path(run_dir) / "metrics.jsonl")


def wandb_records(path: Path) -> list[bytes]:
    """The records of a W&B transaction log (``run-<id>.wandb``): a 7-byte header (``:W&B``,
    magic, version), then LevelDB's log format in 32 KiB blocks: per piece a CRC (4 bytes), a
    length (2, little-endian) and a type (1 full, 2 first, 3 middle, 4 last). wandb 0.31
    writes it from its Go core and ships no Python reader, so the test reads it here."""
    data, block = Path(path).read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    records, pos, parts = [], 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            records.append(parts)
            parts = b""
    return records


def wandb_history(run_dir: Path, run_id: str) -> list[dict]:
    """The history rows of an offline W&B run, parsed with wandb's own protobuf types."""
    from wandb.proto import wandb_internal_pb2

    (path,) = (run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    rows = []
    for data in wandb_records(path):
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
    got = mlflow_history(run_dir, ids["mlflow"], key)
    assert want and [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want])
    got = [(h["_step"], h[key]) for h in wandb_history(run_dir, ids["wandb"]) if key in h]
    assert [s for s, _ in got] == [s for s, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want])
