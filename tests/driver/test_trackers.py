"""Weights & Biases (offline) and MLflow (a local file store) behind the metrics logger: the
rows logged are the rows read back from each tracker's own files, a resume continues the
same tracker run, and a tracker that cannot start is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from driver_helpers import check_trackers, mlflow_history

from neuromas_dist.config import load_config
from neuromas_dist.driver.metrics import MetricsLogger
from neuromas_dist.driver.trackers import TrackerError, from_config


def tracked(run_dir: Path):
    return load_config(None, [f"logging.run_dir={run_dir}", "logging.wandb_project=neuromas-tests",
                              "logging.wandb_mode=offline", f"logging.mlflow_tracking_uri=file://{run_dir}/mlruns",
                              "logging.run_name=unit", "logging.tags=[ci]"])


def test_both_trackers_hold_what_the_logger_logged_and_a_resume_continues_them(tmp_path):
    cfg = tracked(tmp_path)
    log = MetricsLogger(tmp_path, tensorboard=False, trackers=from_config(cfg, tmp_path))
    rows = [log.log(step, {"rollout/reward_mean": 0.25 * step, "eval/accuracy": 0.5, "note": "text"})
            for step in range(3)]
    log.close(trackers=True)
    ids = json.loads((tmp_path / "trackers.json").read_text())
    check_trackers(tmp_path, rows, "rollout/reward_mean")

    resumed = MetricsLogger(tmp_path, tensorboard=False, resume_step=2, trackers=from_config(cfg, tmp_path))
    rows.append(resumed.log(3, {"rollout/reward_mean": 0.75}))
    resumed.close(trackers=True)
    assert json.loads((tmp_path / "trackers.json").read_text()) == ids  # the same tracker runs
    assert mlflow_history(tmp_path, ids["mlflow"], "rollout/reward_mean")[-1] == (3, 0.75)

    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=f"file://{tmp_path}/mlruns").get_run(ids["mlflow"])
    assert run.data.tags["mlflow.runName"] == "unit" and "ci" in run.data.tags


def test_a_tracker_that_cannot_start_is_one_line(tmp_path):
    cfg = load_config(None, ["logging.mlflow_tracking_uri=bogus-scheme://nowhere", f"logging.run_dir={tmp_path}"])
    with pytest.raises(TrackerError, match=r"^logging: mlflow could not start") as err:
        from_config(cfg, tmp_path)
    assert "\n" not in str(err.value)
