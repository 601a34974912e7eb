"""Fault injection: real signals to the real processes of a run launched as a user runs it,
and the audit that says whether the run lost or repeated anything.

Used by ``tests/faults``, ``tests/driver/test_launch_cli.py`` and ``python -m benchmarks.chaos``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import psutil
import pyarrow.parquet as pq
import ray

from neuromas_dist.config import load_config
from neuromas_dist.run_dir import read_metrics


def launch_env() -> dict[str, str]:
    """This environment without ``RAY_ADDRESS`` (a launch then embeds its own Ray), with this
    interpreter's bin first on PATH (``ray start`` and a job's ``python`` are the project's)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def launch(*args: str, cwd: Path | None = None, log: Path | None = None) -> subprocess.Popen:
    """``python -m neuromas_dist.launch ARGS`` as a user runs it, with its own embedded Ray;
    output to ``log`` or a pipe."""
    out = log.open("w") if log else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "neuromas_dist.launch", *args], cwd=cwd, env=launch_env(),
                            stdout=out, stderr=subprocess.STDOUT, text=True)


def descendants(proc: subprocess.Popen, title: str) -> list[psutil.Process]:
    """The launcher's descendant processes whose command line (Ray's process title, or
    vLLM's) contains ``title``."""
    found = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if title in " ".join(child.cmdline()) or title in child.name():
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and everything it started (its embedded Ray)."""
    tree = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def kill_worker(actor: Any, what: str, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to a rollout worker's actor process (``what="actor"``) or to its vLLM
    EngineCore (``"engine"``); returns the pid."""
    pids = ray.get(actor.process_ids.remote())
    if what == "actor":
        pid = pids["actor"]
    else:
        pid = next(p for p in pids["engine"] if "EngineCore" in psutil.Process(p).name())
    os.kill(pid, sig)
    return pid


def wait_for(predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen) -> None:
    """Poll ``predicate`` until true; fail at ``timeout`` or when ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, (f"exited early with {proc.returncode}: "
                                     f"{proc.stdout.read()[-3000:] if proc.stdout else ''}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def steps_logged(run_dir: Path) -> list[int]:
    return [row["step"] for row in read_metrics(Path(run_dir) / "metrics.jsonl")]


def audit(run_dir: Path) -> dict[str, Any]:
    """What a finished run left behind, against what it should hold: trajectory rows against
    steps x questions x samples x nodes (each (step, sample, node) once), steps logged other
    than once, the restarts it counted."""
    cfg = load_config(run_dir / "config.yaml")
    steps = cfg.trainer.steps
    want = steps * cfg.trainer.questions_per_step * cfg.sampling.n_samples * sum(cfg.topology.widths)
    keys: Counter = Counter()
    for path in sorted((run_dir / "trajectories").glob("step_*.parquet")):
        table = pq.read_table(path, columns=["step", "sample_id", "node"])
        keys.update(zip(*(table.column(c).to_pylist() for c in ("step", "sample_id", "node"))))
    metrics = read_metrics(run_dir / "metrics.jsonl")
    logged = Counter(row["step"] for row in metrics)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "rows": sum(keys.values()), "rows_expected": want,
        "rows_duplicated": sum(c - 1 for c in keys.values() if c > 1),
        "steps_lost": sum(1 for s in range(steps + 1) if logged[s] != 1),
        "worker_restarts": summary.get("worker_restarts"), "learner_restarts": summary.get("learner_restarts"),
        "rerun_samples": sum(r.get("faults/rerun_samples", 0) for r in metrics),
        "hung_workers": sum(r.get("faults/hung_workers", 0) for r in metrics),
        "eval_accuracy_after": summary.get("eval_accuracy_after"),
        "checkpoint_seconds_mean": summary.get("checkpoint_seconds_mean"),
        "checkpoint_bytes": summary.get("checkpoint_bytes"),
    }
