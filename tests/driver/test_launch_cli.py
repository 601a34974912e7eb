"""The command line as a user runs it, in subprocesses: Ctrl-C then --resume, and the
cluster form under `ray job submit` against a local `ray start --head`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from driver_helpers import SMALL, metrics

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    # The venv's bin first: `ray start` and the job's `python` must be the project's.
    e = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def launch(*args: str) -> list[str]:
    return [sys.executable, "-m", "neuromas_dist.launch", *args]


def steps_logged(run_dir: Path) -> list[int]:
    return [row["step"] for row in metrics(run_dir)]


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited early with {proc.returncode}: {proc.stdout.read()[-2000:]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def disturb_after_step_1(run_dir: Path, steps: int, disturb, *overrides: str) -> tuple[int, str]:
    """Launch a run, call ``disturb(proc)`` once step 1 is logged; (exit code, output)."""
    proc = subprocess.Popen(launch("--run-dir", str(run_dir), *SMALL, f"trainer.steps={steps}",
                                   "trainer.checkpoint_every=0", *overrides),
                            cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: 1 in steps_logged(run_dir), 400, proc)
        disturb(proc)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    return proc.returncode, out


def test_ctrl_c_checkpoints_and_resume_continues_without_gap_or_repeat(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "run"
    code, out = disturb_after_step_1(run_dir, 6, lambda proc: proc.send_signal(signal.SIGINT))
    assert code == 130, out[-3000:]
    stopped = steps_logged(run_dir)[-1]
    assert 1 <= stopped < 6
    assert (run_dir / "checkpoints" / f"step_{stopped:06d}").is_dir()
    assert f"--resume {run_dir}" in out and "Traceback" not in out

    resumed = subprocess.run(launch("--resume", str(run_dir)), cwd=REPO, env=env(), capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {run_dir / 'checkpoints'}" in resumed.stdout
    assert steps_logged(run_dir) == list(range(7))  # step 0 is the "before" evaluation


def kill_rollout_workers(proc: subprocess.Popen) -> None:
    import psutil

    # The embedded Ray's processes are the launcher's descendants: kill its rollout actor.
    workers = [c for c in psutil.Process(proc.pid).children(recursive=True)
               if "RolloutWorker" in " ".join(c.cmdline())]
    assert workers
    for w in workers:
        w.kill()


def test_a_worker_death_past_the_restart_budget_stops_the_run_with_a_checkpoint_and_one_line(tiny_model_dir, tmp_path):
    """With restarts allowed a dead worker is replaced (tests/faults); with none left the
    run stops as a person can act on it."""
    run_dir = tmp_path / "run"
    code, out = disturb_after_step_1(run_dir, 50, kill_rollout_workers, "faults.max_worker_restarts=0")
    assert code == 1, out[-3000:]
    failed = [line for line in out.splitlines() if "failed at step" in line]
    assert len(failed) == 1 and f"--resume {run_dir}" in failed[0] and "checkpoint " in failed[0]
    assert "Traceback" not in out
    assert list((run_dir / "checkpoints").glob("step_*"))  # the learner was alive: its state is saved


@pytest.fixture
def ray_head():
    """A local head from cluster/local_head.sh (`ray start --head`) in its own temp dir,
    so stopping it cannot touch the test session's embedded Ray (which `ray stop` would
    kill too)."""
    temp_dir = tempfile.mkdtemp(prefix="nmh", dir="/tmp")  # short: Ray's socket paths have a length limit
    # Own ports too: the session's embedded Ray already holds the dashboard agent's
    # default port 52365, and a head whose agent cannot bind refuses every job.
    start = subprocess.run([str(REPO / "cluster" / "local_head.sh"), "start", "--port", str(free_port()),
                            "--dashboard-port", "8265", "--dashboard-agent-listen-port", str(free_port()),
                            "--temp-dir", temp_dir],
                           env=env(), capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        yield "http://127.0.0.1:8265"
    finally:
        stop_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_processes_under(temp_dir: str) -> None:
    """Every process of the head started in ``temp_dir`` (their command lines name it)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 0)):
        subprocess.run(["pkill", f"-{sig.value}", "-f", temp_dir], capture_output=True)
        time.sleep(wait)


def test_ray_job_submit_trains_on_a_running_cluster(ray_head, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "job"
    for _ in range(15):
        submit = subprocess.run([str(REPO / "cluster" / "submit.sh"), "--run-dir", str(run_dir), *SMALL,
                                 "trainer.steps=1"], cwd=REPO, env={**env(), "RAY_ADDRESS": ray_head},
                                capture_output=True, text=True, timeout=900)
        # `ray start` returns before the dashboard's job agent is up; the job was not created.
        if "No available agent to submit job" not in submit.stdout + submit.stderr:
            break
        time.sleep(2)
    out = submit.stdout + submit.stderr
    assert submit.returncode == 0, out[-4000:]
    assert "succeeded" in out
    assert "| joined " in out  # the job's driver joined the head, not an embedded Ray
    assert steps_logged(run_dir) == [0, 1]
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 1
