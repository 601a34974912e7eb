"""One code check: a HumanEval-style completion judged by its task's tests.

Two processes per check, started here and connected only by two pipes:

- the **candidate** (``candidate.py``): the prompt and the completion, run in a jail
  (``jail.py``: its own PID, mount and network namespaces, a private root filesystem, its own
  uid as root) under resource limits; it only answers calls;
- the **judge** (``judge.py``): the prompt and the task's tests, run with the candidate's
  function replaced by a proxy that sends each call's arguments to the candidate and rebuilds
  its answer as plain data (``wire.py``).

This process only waits: it kills both sessions at the wall-clock limit, reads at most
``MAX_VERDICT_BYTES`` of the judge's reply, and believes a verdict only with the nonce it gave
the judge (which the candidate never sees). Whatever the candidate does, :func:`check`
returns a :class:`CodeOutcome`; it never raises and never leaves a process behind.

``check_async`` runs the check on a thread (the work is the child processes), so a rollout
worker's event loop keeps serving its vLLM engine while code runs; at most ``SLOTS`` checks
(the cores) run at once.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import NamedTuple, cast

import psutil

from neuromas_dist.tasks.sandbox.isolation import CANDIDATE, CHILD_ENV, JUDGE, LEVELS, Isolation, candidate_uid, probe
from neuromas_dist.tasks.sandbox.jail import SETUP_FAILED

# Checks running at once in this process: a batch of samples is scored concurrently, and each
# check is two processes of up to memory_mb; more than the cores would only queue in the kernel.
SLOTS = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))
MAX_VERDICT_BYTES = 4096
STATUSES = ("passed", "failed", "timeout", "memory", "crashed")
KILL_MARGIN_S = 3.0  # past the time limit: two interpreters' start and the judge's own reply


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0  # wall clock of the candidate and its tests (CPU time: this + 1 s)
    memory_mb: int = 512  # address space of the candidate's process (the judge gets the same)
    file_mb: int = 16  # the candidate's private /tmp and its largest file

    def as_dict(self) -> dict[str, float]:
        return {"timeout_s": self.timeout_s, "memory_mb": self.memory_mb, "file_mb": self.file_mb}


class CodeJob(NamedTuple):
    program: str  # what the candidate runs: the prompt, then the completion
    tests: str  # what the judge runs: the prompt (some tests call its helpers), then the tests defining check
    entry_point: str  # the function under test


class CodeOutcome(NamedTuple):
    status: str  # one of STATUSES
    detail: str = ""
    isolation: str = ""  # the level the check ran under (isolation.LEVELS)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def job_of(prompt: str, completion: str, tests: str, entry_point: str) -> CodeJob:
    """HumanEval's layout. A completion that holds the whole function replaces the prompt's
    stub (defined after it); a bare body continues the prompt's signature."""
    whole = f"def {entry_point}" in completion
    program = f"{prompt}\n    pass\n\n{completion}\n" if whole else f"{prompt}{completion}\n"
    return CodeJob(program, f"{prompt}\n\n{tests}\n", entry_point)


def check(job: CodeJob, limits: SandboxLimits = SandboxLimits(), require: str = "process") -> CodeOutcome:
    """Run ``job``'s tests against its program. A check that cannot get ``require`` crashes
    (scores 0) rather than run with less."""
    isolation = probe()
    if LEVELS.index(isolation.level) < LEVELS.index(require):
        return CodeOutcome("crashed", f"isolation {isolation.level} is below data.sandbox.require={require}",
                           isolation.level)
    nonce = secrets.token_hex(16)
    with SLOTS:
        reply, timed_out, candidate_status = _run(job, limits, isolation, nonce)
    return _verdict(reply, nonce, timed_out, candidate_status, isolation.level)


def _run(job: CodeJob, limits: SandboxLimits, isolation: Isolation, nonce: str) -> tuple[bytes, bool, int | None]:
    calls_r, calls_w = os.pipe()
    results_r, results_w = os.pipe()
    # Under the "none" plan the candidate works in a temporary directory of the host (removed
    # after); a jailed one gets a private /tmp that dies with its namespace.
    workdir = tempfile.mkdtemp(prefix="neuromas-sandbox-") if isolation.plan == "none" else "/"
    procs: list[subprocess.Popen] = []  # the judge first: it holds the nonce, and is made undumpable at once
    try:
        try:
            uid = candidate_uid(isolation.plan)
            if isolation.plan == "none" and uid:
                os.chown(workdir, uid, uid)
            procs.append(_spawn(JUDGE, {"program": job.tests, "entry_point": job.entry_point, "nonce": nonce,
                                        "timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb,
                                        "fds": [calls_w, results_r]},
                                (calls_w, results_r), "/", stdout=subprocess.PIPE))
            procs.append(_spawn(CANDIDATE, {"program": job.program, "entry_point": job.entry_point,
                                            "plan": isolation.plan, "uid": uid, "limits": limits.as_dict(),
                                            "fds": [calls_r, results_w]},
                                (calls_r, results_w), workdir, stdout=subprocess.DEVNULL))
        except OSError:  # no process to start (EAGAIN, ENOMEM, EMFILE): a crash, never an exception
            pass
        finally:
            for fd in (calls_r, calls_w, results_r, results_w):
                os.close(fd)  # the children hold their ends: EOF reaches each side when the other dies
        reply, timed_out = (b"", False) if len(procs) < 2 else _talk(procs[0], limits.timeout_s + KILL_MARGIN_S)
        judge_ok = len(procs) == 2 and procs[0].poll() == 0
    finally:
        for proc in reversed(procs):
            _kill_session(proc)
        if workdir != "/":
            shutil.rmtree(workdir, ignore_errors=True)
    # A verdict counts only from a judge that exited by itself with status 0 (a judge killed by
    # someone else, its pipe written by them, is no judge).
    return reply if judge_ok else b"", timed_out, procs[1].returncode if len(procs) == 2 else None


def _spawn(script: os.PathLike, job: dict, fds: tuple[int, int], cwd: str, stdout: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-I", "-S", str(script)], cwd=cwd, stdin=subprocess.PIPE, stdout=stdout,
                            stderr=subprocess.DEVNULL, start_new_session=True, pass_fds=fds, env=CHILD_ENV)
    assert proc.stdin is not None  # stdin=PIPE
    try:
        proc.stdin.write(json.dumps(job).encode())  # the script reads all of it before anything else
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    return proc


def _talk(proc: subprocess.Popen, wall_s: float) -> tuple[bytes, bool]:
    """At most MAX_VERDICT_BYTES of the judge's stdout; (reply, timed out at ``wall_s``)."""
    reply = bytearray()
    stdout = cast(io.BufferedReader, proc.stdout)  # stdout=PIPE, binary and buffered: Popen's reader

    def read() -> None:
        while len(reply) < MAX_VERDICT_BYTES:
            chunk = stdout.read1(MAX_VERDICT_BYTES - len(reply))
            if not chunk:
                return
            reply.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=wall_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()  # its stdout closes with it, so the reader ends now
    reader.join(timeout=2.0)
    return bytes(reply), timed_out


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the child's session (the judge, or the candidate's P0 with its namespace's init:
    init dies with P0 too, and the kernel then kills everything in the namespace), and return
    only once every one of those processes is gone. A child already reaped is left alone: its
    pid may name another process by now."""
    if proc.poll() is None:
        try:
            inside = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            inside = []
        for child in inside:  # the namespace's init first, so P0 reaps it rather than leave it to pid 1
            try:
                child.kill()
            except psutil.Error:
                pass
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
            try:
                kill()
            except (ProcessLookupError, PermissionError):
                pass
        psutil.wait_procs(inside, timeout=5.0)
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _verdict(reply: bytes, nonce: str, timed_out: bool, candidate_status: int | None, level: str) -> CodeOutcome:
    if candidate_status == SETUP_FAILED:
        return CodeOutcome("crashed", "the sandbox could not be built", level)
    if timed_out:
        return CodeOutcome("timeout", "wall-clock limit", level)
    try:
        verdict = json.loads(reply.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return CodeOutcome("crashed", "no verdict from the judge", level)
    if not isinstance(verdict, dict) or verdict.get("nonce") != nonce or verdict.get("status") not in STATUSES:
        return CodeOutcome("crashed", "no valid verdict", level)
    return CodeOutcome(verdict["status"], str(verdict.get("detail", ""))[:200], level)


async def check_async(job: CodeJob, limits: SandboxLimits = SandboxLimits(), require: str = "process") -> CodeOutcome:
    """:func:`check` off the event loop."""
    return await asyncio.to_thread(check, job, limits, require)
