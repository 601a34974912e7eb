"""Faults of the run as a whole, launched as a user launches it: a learner rank killed
(the driver rebuilds the learner from the last checkpoint and replays) then Ctrl-C and
``--resume`` in sync mode; the launcher itself killed with SIGKILL mid-flight and resumed in
async mode. Afterwards the run holds every step once: in metrics.jsonl, in trajectories/ (one row per question, sample
and node), and with the questions the uninterrupted run would have drawn."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from neuromas_dist.testing.faults import descendants, kill_tree, launch, steps_logged, wait_for
from neuromas_dist.trajectories.parquet import read_step, step_files, step_of

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.faults]

QUESTIONS, SAMPLES, NODES, STEPS = 4, 2, 3, 4
RUN = [f"trainer.questions_per_step={QUESTIONS}", f"sampling.n_samples={SAMPLES}", "sampling.max_new_tokens=24",
       "data.n_eval=8", "data.n_train=10", "logging.progress=false", f"trainer.steps={STEPS}",
       "trainer.checkpoint_every=1", "trainer.eval_every=0", "trainer.eval_samples=0",
       "trainer.final_ablation=false", "logging.plots=false"]
# n_train=10 with 4 questions per step: step 3 crosses an epoch of the sampler.


def expected_questions(run_dir: Path) -> list[list[str]]:
    from neuromas_dist.config import load_config
    from neuromas_dist.driver.sampler import QuestionSampler
    from neuromas_dist.tasks.data import load_task_data

    cfg = load_config(run_dir / "config.yaml")
    sampler = QuestionSampler(load_task_data(cfg.data).train, cfg.trainer.seed)
    return [sorted(str(ex.id) for ex in sampler.next_batch(QUESTIONS)) for _ in range(STEPS)]


def assert_every_step_once(run_dir: Path) -> None:
    assert steps_logged(run_dir) == list(range(STEPS + 1))  # step 0 is the "before" evaluation
    root = run_dir / "trajectories"
    assert sorted({step_of(f) for f in step_files(root)}) == list(range(1, STEPS + 1))
    assert not list(root.glob(".*partial")), "a half-written step file was left behind"
    for k, want in enumerate(expected_questions(run_dir), start=1):
        table = read_step(root, k).select(["step", "sample_id", "question_id", "node"]).to_pylist()
        keys = [(r["sample_id"], r["node"]) for r in table]
        assert len(keys) == len(set(keys)) == QUESTIONS * SAMPLES * NODES, k
        assert {r["step"] for r in table} == {k}
        assert sorted({r["question_id"] for r in table}) == want, f"step {k} drew other questions"


def resume(run_dir: Path) -> str:
    proc = launch("--resume", str(run_dir))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    return out


def test_learner_rank_death_then_ctrl_c_in_sync_mode(tiny_model_dir, tmp_path):
    """A learner rank killed after step 1: the learner is rebuilt from step 0's checkpoint
    (the next periodic one is step 3's) and step 1 replayed. Then Ctrl-C: the run stops after
    the step under way with a checkpoint of its own, exit 130 and one line saying how to go
    on, and ``--resume`` continues from it without a gap or a repeat."""
    run_dir = tmp_path / "sync"
    proc = launch("--run-dir", str(run_dir), *RUN, "trainer.checkpoint_every=3")
    try:
        wait_for(lambda: 1 in steps_logged(run_dir), 400, proc)
        (rank,) = descendants(proc, "LearnerRank")
        rank.kill()
        wait_for(lambda: any(r.get("faults/learner_restarts_total") == 1 for r in metric_rows(run_dir)), 400, proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert proc.returncode == 130, out[-3000:]
    assert "learner rebuilt from" in out and "step_000000" in out and "replaying from step 1" in out, out[-3000:]
    stopped = steps_logged(run_dir)[-1]
    assert 1 <= stopped < STEPS
    assert f"stopped at step {stopped}; checkpoint " in out and f"--resume {run_dir}" in out
    assert (run_dir / "checkpoints" / f"step_{stopped:06d}").is_dir() and "Traceback" not in out
    assert f"resumed from {run_dir / 'checkpoints'}" in resume(run_dir)
    assert_every_step_once(run_dir)


def metric_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_driver_death_in_async_mode_loses_no_rollout(tiny_model_dir, tmp_path):
    """Killed while step 3's rollout was in flight (sampled during step 2's update): on
    resume that rollout is sampled again from the checkpoint's cursor, never counted twice."""
    run_dir = tmp_path / "async"
    proc = launch("--run-dir", str(run_dir), *RUN, "trainer.mode=async", "trainer.max_staleness=1")
    try:
        wait_for(lambda: 2 in steps_logged(run_dir), 400, proc)
    finally:
        kill_tree(proc)
    resume(run_dir)
    assert_every_step_once(run_dir)
