"""End-to-end training runs through the real stack: Ray actors, vLLM CPU engines,
the DeepSpeed learner, on the tiny model. Each run takes about a minute here (mostly
engine and learner start-up), so each test does one run and checks all it can."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from driver_helpers import SMALL, check_trackers, metrics
from pinned import check_pinned
from small_run import WARM

from neuromas_dist.adapters.peft_io import read_adapter_set
from neuromas_dist.config import load_config
from neuromas_dist.trajectories.parquet import read_step
from neuromas_dist.trajectories.schema import TRAJECTORY_SCHEMA

pytestmark = [pytest.mark.ray, pytest.mark.vllm]


def lora_b_norm(adapters, node: str) -> float:
    return sum(float(t.norm()) for k, t in adapters.tensors[node].items() if "lora_B" in k)


def run(tmp_path: Path, name: str, *overrides: str) -> Path:
    from neuromas_dist.driver.run import run_training

    run_dir = tmp_path / name
    cfg = load_config(None, [*SMALL, WARM, f"logging.run_dir={run_dir}", *overrides])
    assert run_training(cfg) == 0
    return run_dir


@pytest.fixture(scope="module")
def sync_run(trained_run):
    return trained_run


def test_sync_run_leaves_the_complete_run_directory(sync_run):
    for path in ("config.yaml", "summary.json", "plots/reward_accuracy.png", "plots/nodes.png",
                 "checkpoints/step_000001", "checkpoints/step_000002"):
        assert (sync_run / path).exists(), path
    assert list((sync_run / "tensorboard").glob("events.out.tfevents.*"))
    rows = metrics(sync_run)
    assert [r["step"] for r in rows] == [0, 1, 2]
    last = rows[-1]
    for key in ("rollout/reward_mean", "eval/accuracy", "eval/sampled_accuracy", "node/L1N0/reward_mean",
                "node/L0N1/advantage_mean", "node/L0N0/logprob_gap", "node/L1N0/response_len_mean",
                "timing_s/rollout", "timing_s/learn", "timing_s/sync"):
        assert key in last, key
    # The learner rescored the rollout's tokens with the adapters that sampled them.
    assert all(last[f"node/{n}/logprob_gap"] < 1e-3 for n in ("L0N0", "L0N1", "L1N0"))
    summary = json.loads((sync_run / "summary.json").read_text())
    assert summary["eval_questions"] == 8 and summary["steps"] == 2
    assert {"eval_sampled_accuracy_before", "eval_sampled_accuracy_after"} <= set(summary)
    assert 0.0 <= summary["eval_accuracy_before"] <= 1.0 and 0.0 <= summary["eval_accuracy_after"] <= 1.0


def test_sync_run_gives_its_pinned_numbers(sync_run, tiny_model_dir):
    """The seeded 2-step run to the last digit: the rollout's reward and tokens per step, the
    greedy and sampled held-out accuracy before and after (tests/pinned.py: how to re-pin)."""
    keys = ("rollout/reward_mean", "rollout/response_tokens", "eval/accuracy", "eval/sampled_accuracy")
    values = {f"step{r['step']}:{k}": r[k] for r in metrics(sync_run) for k in keys if k in r}
    assert {"step0:eval/accuracy", "step1:rollout/reward_mean", "step2:rollout/reward_mean", "step2:eval/accuracy",
            "step2:eval/sampled_accuracy"} <= set(values)
    check_pinned("e2e_sync_run", values, tiny_model_dir)


TIMED = ("timing_s/", "perf/", "learner/tokens_per_s", "rollout/engine_start_s", "rollout/adapter_load_s")


def test_a_run_on_parked_workers_logs_what_fresh_workers_logged(sync_run):
    """rollout.keep_warm: the sync run parked its rollout worker; a run with its settings takes
    that actor process (engine, tokenizer) and logs the sync run's rows to the last digit: the
    engine held nothing of the last run (adapters, ids, prefix cache)."""
    import ray

    from neuromas_dist.rollout import warm_pool

    parked = warm_pool.parked()
    assert len(parked) == 1, "the sync run (rollout.keep_warm=true) parked its worker"
    pid = ray.get(parked[0].process_ids.remote())["actor"]
    warm = run(sync_run.parent, "warm", "trainer.steps=2", "trainer.checkpoint_every=1", "learner.lr=0.01")
    assert [ray.get(w.process_ids.remote())["actor"] for w in warm_pool.parked()] == [pid]
    cold_rows, warm_rows = metrics(sync_run), metrics(warm)
    assert len(warm_rows) == len(cold_rows) == 3
    for cold, hot in zip(cold_rows, warm_rows):
        cold, hot = ({k: v for k, v in r.items() if not k.startswith(TIMED)} for r in (cold, hot))
        assert hot == cold, {k: (cold.get(k), hot.get(k)) for k in cold.keys() | hot.keys()
                             if cold.get(k) != hot.get(k)}


def test_sync_run_trajectories_follow_the_schema(sync_run):
    for step in (1, 2):
        table = read_step(sync_run / "trajectories", step)
        assert table.schema.equals(TRAJECTORY_SCHEMA, check_metadata=False)
        assert set(table.column("step").to_pylist()) == {step}
        # 4 questions x 2 samples x 3 nodes; on-policy: sampled with the previous step's adapters.
        assert table.num_rows == 24
        assert set(table.column("adapter_version").to_pylist()) == {step - 1}


def test_sync_run_rows_say_what_each_node_wrote(sync_run):
    """Each row carries its own node's text, the question and the gold answer; the
    sink's text is the row's answer_text, the other nodes' texts are their own."""
    table = read_step(sync_run / "trajectories", 2).to_pylist()
    for row in table:
        assert row["question"].startswith("Let x = ") and row["gold_answer"].isdigit()
        if row["node"] == "L1N0":
            assert row["text"] == row["answer_text"]
    assert any(r["text"] != r["answer_text"] for r in table if r["node"] != "L1N0")
    last = metrics(sync_run)[-1]
    for node in ("L0N0", "L0N1", "L1N0"):
        for key in ("entropy", "carries_x", "carries_y", "carries_answer"):
            assert 0.0 <= last[f"node/{node}/{key}"] <= (1.0 if key.startswith("carries") else 50.0)


def test_sync_run_ends_with_an_eval_report(sync_run):
    """The training run calls the evaluation code at its end: eval/ holds the report,
    the plots and the passes behind them; summary.json holds the paired gain and its CI."""
    for name in ("report.json", "report.md", "ablation.png", "node_carries.png", "accuracy_over_training.png",
                 "trajectories/before_greedy.parquet", "trajectories/final_greedy.parquet",
                 "trajectories/ablate_L0N0_greedy.parquet"):
        assert (sync_run / "eval" / name).is_file(), name
    report = json.loads((sync_run / "eval" / "report.json").read_text())
    assert report["questions"] == 8 and set(report["ablation"]) == {"L0N0", "L0N1", "L1N0"}
    assert set(report["node_text"]["L0N0"]["carries"]) == {"x", "y", "answer"}
    summary = json.loads((sync_run / "summary.json").read_text())
    lo, hi = summary["eval_accuracy_gain_ci"]
    assert lo <= summary["eval_accuracy_gain"] <= hi
    gain = summary["eval_accuracy_after"] - summary["eval_accuracy_before"]
    assert summary["eval_accuracy_gain"] == pytest.approx(gain)


def test_evaluate_command_on_the_run_and_ablation_touches_one_node(sync_run, tmp_path):
    """`python -m neuromas_dist.evaluate` on a copy of the run directory (as if fetched
    from a cluster) rewrites eval/. Zeroing L0N0's adapter leaves L0N1, which does not
    read it, exactly as in the full graph (same tokens, same logprobs); zeroing the sink
    leaves both first-layer nodes unchanged."""
    import shutil

    from neuromas_dist import evaluate

    copy = tmp_path / "copied_run"
    shutil.copytree(sync_run, copy)
    (copy / "eval" / "trajectories" / "final_greedy.parquet").unlink()
    (copy / "eval" / "report.json").unlink()
    assert evaluate.main([str(copy), "--samples", "2"]) == 0
    report = json.loads((copy / "eval" / "report.json").read_text())
    assert report["samples_per_question"] == 2 and "gain" in report
    full = _by_key(copy / "eval" / "trajectories" / "final_greedy.parquet")
    for zeroed, unchanged in (("L0N0", ("L0N1",)), ("L1N0", ("L0N0", "L0N1"))):
        ablated = _by_key(copy / "eval" / "trajectories" / f"ablate_{zeroed}_greedy.parquet")
        for key, row in full.items():
            if key[1] in unchanged:
                assert ablated[key]["response_ids"] == row["response_ids"], key
                assert ablated[key]["logprobs"] == pytest.approx(row["logprobs"], abs=1e-5), key
        # ... while the zeroed node itself scores its tokens differently (its adapter moved in training).
        moved = [k for k, row in full.items()
                 if k[1] == zeroed and ablated[k]["response_ids"][:1] == row["response_ids"][:1]]
        assert moved and any(abs(ablated[k]["logprobs"][0] - full[k]["logprobs"][0]) > 1e-4 for k in moved), zeroed


def test_evaluate_on_a_data_file_writes_where_told_and_keeps_the_run_s_eval(sync_run, tmp_path):
    """`evaluate RUN_DIR --data FILE --out DIR`: the held-out questions written as a plain
    JSONL file give the same greedy answers as the run's own final pass; the run's eval/
    is untouched."""
    import json

    from neuromas_dist import evaluate
    from neuromas_dist.run_dir import run_config
    from neuromas_dist.tasks.data import load_task_data

    heldout = load_task_data(run_config(sync_run).data).eval
    data = tmp_path / "heldout.jsonl"
    data.write_text("".join(json.dumps({"question": e.question, "answer": e.answer}) + "\n" for e in heldout))
    own = (sync_run / "eval" / "report.json").read_bytes()
    assert evaluate.main([str(sync_run), "--data", str(data), "--out", str(tmp_path / "out"), "--no-ablation",
                          "--samples", "0"]) == 0
    assert (sync_run / "eval" / "report.json").read_bytes() == own
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    mine = pq.read_table(tmp_path / "out" / "trajectories" / "final_greedy.parquet").to_pylist()
    theirs = pq.read_table(sync_run / "eval" / "trajectories" / "final_greedy.parquet").to_pylist()
    assert report["questions"] == len(heldout)
    assert sorted((r["node"], r["text"]) for r in mine) == sorted((r["node"], r["text"]) for r in theirs)


def _by_key(path: Path) -> dict:
    return {(r["question_id"], r["node"]): r for r in pq.read_table(path).to_pylist()}


def test_sync_run_final_adapters_are_trained_and_in_peft_layout(sync_run):
    from peft import PeftConfig

    final = read_adapter_set(sync_run / "adapters", version=0)
    assert set(final.tensors) == {"L0N0", "L0N1", "L1N0"}
    assert all(lora_b_norm(final, n) > 0 for n in final.tensors)  # B started at 0: every node moved
    config = PeftConfig.from_pretrained(str(sync_run / "adapters" / "L1N0"))
    assert config.base_model_name_or_path


def test_async_run_with_growth_from_a_run_and_within_the_run(sync_run, tmp_path):
    """Async mode, started from the sync run's adapters ([2, 1]), grown to [4, 2, 1] at
    step 2. lr = 0 keeps the adapters where growth put them, so the final ones show the
    mapping: the trained sink stays the sink, the trained first layer becomes layer 1,
    the new front layer starts at B = 0. Carry mode: every grown node runs from the
    growth step on (the gated mode is tested end to end by the comparisons table)."""
    grown = run(tmp_path, "async", "trainer.mode=async", "trainer.max_staleness=1", "trainer.steps=4",
                f"trainer.grow_from={sync_run}", "trainer.growth=[{at_step: 2, widths: [4, 2, 1]}]",
                "learner.lr=0.0", "trainer.growth_mode=carry")
    small = read_adapter_set(sync_run / "adapters", version=0)
    large = read_adapter_set(grown / "adapters", version=0)
    for new, old in (("L2N0", "L1N0"), ("L1N0", "L0N0"), ("L1N1", "L0N1")):
        assert all(torch.equal(large.tensors[new][k], small.tensors[old][k]) for k in small.tensors[old]), new
    assert all(lora_b_norm(large, f"L0N{i}") == 0 for i in range(4))
    rows = {r["step"]: r for r in metrics(grown)}
    assert "node/L1N1/reward_mean" not in rows[1] and "node/L0N3/reward_mean" in rows[2]
    # Steps 3 and 4 were sampled during the previous step's update: one version behind,
    # importance-weighted. Step 2's was not started early: it needed the grown graph.
    assert rows[2]["node/L2N0/stale_token_frac"] == 0.0
    assert rows[3]["node/L2N0/stale_token_frac"] == 1.0 and rows[4]["node/L2N0/stale_token_frac"] == 1.0
    # The step-0 evaluation ran the 3-node graph: the 7-node report does not pair with it.
    report = json.loads((grown / "eval" / "report.json").read_text())
    assert "gain" not in report
    assert set(report["ablation"]) == {f"L{k}N{i}" for k, w in enumerate((4, 2, 1)) for i in range(w)}


def test_the_run_logged_every_step_to_wandb_offline_and_a_local_mlflow_store(sync_run):
    rows = metrics(sync_run)
    for key in ("rollout/reward_mean", "eval/accuracy", "node/L0N0/logprob_gap"):
        check_trackers(sync_run, rows, key)
