"""Shared by the fault-injection tests: how faults are injected (real signals to real
processes) and how a run launched as a user runs it is watched."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from benchmarks.chaos import descendants, kill_tree, launch, steps_logged  # noqa: F401 - one injector for both


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


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"exited early with {proc.returncode}: {proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)
