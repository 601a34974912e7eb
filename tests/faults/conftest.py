"""Fault injection against the real stack: Ray actors, vLLM CPU engines, the DeepSpeed
learner. Faults are real: SIGKILL of a worker's actor process or of its vLLM engine
process, SIGSTOP of an engine (a hang), ``ray.kill`` of a learner rank. Each restart of a
worker costs an engine start (~25 s here), so tests share one pool and inject few faults."""

from __future__ import annotations

import os
import signal

import pytest


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


@pytest.fixture(scope="session")
def fault_examples():
    from neuromas_dist.tasks import make_synthetic

    return make_synthetic("hier", "train", 64, 0)
