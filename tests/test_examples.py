"""The README's "your own model, data, reward and graph" config, trained for two steps on
the real stack: a JSONL data set with its own field names, a reward function named by
config (imported where the rollout scores), a graph with a skip edge."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from small_run import SMALL_RUN

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.vllm]


def test_own_data_reward_and_graph_train_for_two_steps(ray_local, tiny_model_dir, tmp_path, monkeypatch):
    from neuromas_dist.config import load_config
    from neuromas_dist.driver.run import run_training
    from neuromas_dist.run_dir import run_config

    monkeypatch.chdir(REPO)  # the config's paths are relative to the repository root
    run_dir = tmp_path / "own"
    small = [o for o in SMALL_RUN if not o.startswith(("data.", "sampling.max_new_tokens"))]
    cfg = load_config(REPO / "examples" / "own" / "config.yaml",
                      [*small, f"logging.run_dir={run_dir}", "trainer.steps=2", "trainer.eval_every=0",
                       "trainer.final_ablation=false", "trainer.eval_samples=0"])
    assert run_training(cfg) == 0
    assert run_config(run_dir).topology.edges == ("L0N0->L1N0", "L0N1->L1N0", "L1N0->L2N0", "L0N0->L2N0")
    rows = pq.read_table(run_dir / "trajectories").to_pylist()
    assert {r["node"] for r in rows} == {"L0N0", "L0N1", "L1N0", "L2N0"}
    assert {r["reward"] for r in rows} <= {0.0, 0.5, 1.0}  # close_enough's values
    sink = [r for r in rows if r["node"] == "L2N0"]
    assert sink and all("apples" in r["question"] or "books" in r["question"] or "coins" in r["question"]
                        or "stamps" in r["question"] for r in sink)
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["step"] == 2 and not any(k.startswith("rollout/flag_reward_fn") and v for k, v in last.items())
