"""A paper benchmark end to end for one step on the tiny model, from fixture files in the data
set's own schema: the benchmark's prompt reaches the nodes, the sink's reply is scored by the
benchmark's rule (the tiny model knows nothing of science or code: near-zero accuracy is
expected), rows are written and the step is trained and evaluated. About 30 s each, so two:
a lettered choice (ARC; MMLU takes the same path) and code checked in the sandbox (HumanEval).
Every benchmark's loading, prompts and scoring rule (BBH Navigate's yes/no, MMLU's subjects)
are in tests/tasks/test_benchmarks.py; the rollout scores each through its Task alike."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from driver_helpers import SMALL, metrics
from small_run import WARM

from neuromas_dist.config import load_config
from neuromas_dist.tasks.sandbox import probe

pytestmark = [pytest.mark.ray, pytest.mark.vllm]
FIXTURES = Path(__file__).resolve().parents[1] / "tasks" / "fixtures"
TASKS = ("arc_challenge", "humaneval")
QUESTION_START = {"humaneval": "Complete this Python function:"}


@pytest.mark.parametrize("task", TASKS)
def test_one_step_of_each_benchmark(task, ray_local, tiny_model_dir, tmp_path):
    from neuromas_dist.driver.run import run_training

    run_dir = tmp_path / task
    cfg = load_config(None, [*SMALL, WARM, f"data.task={task}", f"data.local_dir={FIXTURES / task}",
                             "trainer.steps=1", "trainer.questions_per_step=2", "trainer.eval_every=0",
                             "trainer.eval_samples=0", "trainer.final_ablation=false", "logging.plots=false",
                             f"logging.run_dir={run_dir}"])
    assert run_training(cfg) == 0
    rows = pq.read_table(next((run_dir / "trajectories").glob("step_000001_*.parquet"))).to_pylist()
    assert len(rows) == 2 * 2 * 3  # questions x samples x nodes, each once
    assert all(r["question"].startswith(QUESTION_START.get(task, "")) for r in rows)
    if task == "humaneval":
        assert all("def check(candidate)" in r["gold_answer"] for r in rows)
        full = probe().level == "full"  # what the workers' machine (this one) gives, in every step's row
        assert metrics(run_dir)[-1]["rollout/code_isolation_full"] == float(full)
        assert json.loads((run_dir / "summary.json").read_text())["code_checks"]["level"] == probe().level
    else:
        assert {r["gold_answer"] for r in rows} <= set("ABCDE") and all("\n(A) " in r["question"] for r in rows)
    last = metrics(run_dir)[-1]
    assert last["step"] == 1 and 0.0 <= last["rollout/reward_mean"] <= 1.0 and "eval/accuracy" in last
