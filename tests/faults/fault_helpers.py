"""Shared by the fault-injection tests: how faults are injected (real signals to real
processes) and how a run launched as a user runs it is watched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

def kill(actor, what: str, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to a rollout worker's actor process or to its vLLM EngineCore; returns the pid."""
    import psutil
    import ray

    pids = ray.get(actor.process_ids.remote())
    if what == "actor":
        pid = pids["actor"]
    else:
        pid = next(p for p in pids["engine"] if "EngineCore" in psutil.Process(p).name())
    os.kill(pid, sig)
    return pid


def launcher_env() -> dict[str, str]:
    # The venv's bin first: the launcher's embedded Ray starts its workers with it.
    e = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def launch(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "neuromas_dist.launch", *args], cwd=REPO, env=launcher_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def steps_logged(run_dir: Path) -> list[int]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.is_file() else []


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited early with {proc.returncode}: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def descendants(proc: subprocess.Popen, title: str) -> list:
    """The launcher's descendant processes whose command line (Ray's process title) has ``title``."""
    import psutil

    return [c for c in psutil.Process(proc.pid).children(recursive=True) if title in " ".join(c.cmdline())]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and everything it started (its embedded Ray)."""
    import psutil

    tree = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
