"""What isolation this machine gives a code check, seen from inside a real jail, and the
refusal when it is weaker than ``data.sandbox.require``.

Levels, weakest first:

- ``process``: the tests run in a judge process of their own and the candidate in another,
  under resource limits (CPU, memory, file size, open files, no fork) and a wall-clock kill.
  The verdict cannot be forged; the candidate can still read and write what the parent's
  user can. Every Linux machine gives this.
- ``full``: ``process`` plus a private filesystem (no host files, data sets or sockets), a
  PID namespace per check (no check sees or signals another), no network and a syscall filter
  (no kernel keyrings, new namespaces, mounts, tracing); as root also a uid of its own per check.

:func:`probe` does not trust that a system call returned 0: it runs a candidate under each
plan (``jail.PLANS``) and asks it what it sees (its pid, its uid, a host file, its network
interfaces). The answer is cached per process.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

LEVELS = ("process", "full")
HERE = Path(__file__).parent
CANDIDATE = HERE / "candidate.py"
JUDGE = HERE / "judge.py"
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
UID_BASE, UID_SPAN = 0x7F000000, 1 << 24  # candidate uids under the root plan: far above any real user
FIXES = ("run the rollout workers as root, or enable unprivileged user namespaces "
         "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces>0; on Ubuntu 24.04+ also "
         "kernel.apparmor_restrict_unprivileged_userns=0), "
         "or accept the weaker level with data.sandbox.require=process")


class IsolationError(RuntimeError):
    """The machine cannot isolate code checks as far as the config requires (one line)."""


@dataclass(frozen=True)
class Isolation:
    plan: str  # jail.PLANS: how the candidate is started (root, userns, none)
    private_fs: bool  # the candidate saw no host file
    pid_namespace: bool  # the candidate was pid 2 of its own namespace
    no_network: bool  # the candidate's only interface was an unconfigured loopback
    uid_per_check: bool  # the candidate ran as a uid no other process has
    syscall_filter: bool = False  # seccomp refused the syscalls jail.BLOCKED names (keyrings, namespaces, ...)

    @property
    def level(self) -> str:
        jailed = self.private_fs and self.pid_namespace and self.no_network and self.syscall_filter
        return "full" if jailed else "process"

    def record(self) -> dict[str, object]:
        """What summary.json keeps of it."""
        return {"level": self.level, **dataclasses.asdict(self)}

    def describe(self) -> str:
        """The one line a run prints at start."""
        parts = {"private fs": self.private_fs, "pid namespace": self.pid_namespace, "no network": self.no_network,
                 "syscall filter": self.syscall_filter, "uid per check": self.uid_per_check}
        have = ", ".join(["separate judge", "resource limits"] + [k for k, v in parts.items() if v])
        missing = [k for k, v in parts.items() if not v]
        return f"code checks: {have} (level {self.level}, plan {self.plan})" + (
            f"; missing: {', '.join(missing)}" if missing else "")


def candidate_uid(plan: str) -> int:
    """A fresh uid for one check under the root plan (0: the plan keeps the namespace's own)."""
    return UID_BASE + secrets.randbelow(UID_SPAN) if plan == "root" or (plan == "none" and os.geteuid() == 0) else 0


@functools.lru_cache(maxsize=1)
def probe() -> Isolation:
    """The strongest plan this process can start, as a candidate inside it reports."""
    plans = ("root", "userns") if os.geteuid() == 0 else ("userns",)
    with tempfile.NamedTemporaryFile(prefix="neuromas-probe-") as marker:
        for plan in plans:
            seen = _ask(plan, marker.name)
            if seen is not None:
                return Isolation(plan, private_fs=not seen["sees_host"], pid_namespace=seen["pid"] == 2,
                                 no_network=seen["interfaces"] == ["lo"],
                                 uid_per_check=plan == "root" and seen["uid"] >= UID_BASE,
                                 syscall_filter=seen["syscall_filter"])
    return Isolation("none", False, False, False, uid_per_check=os.geteuid() == 0)


def _ask(plan: str, marker: str) -> dict | None:
    job = {"probe": plan, "marker": marker, "uid": candidate_uid(plan),
           "limits": {"timeout_s": 5, "memory_mb": 256, "file_mb": 1}}
    try:
        out = subprocess.run([sys.executable, "-I", "-S", str(CANDIDATE)], input=json.dumps(job).encode(),
                             capture_output=True, timeout=30, env=CHILD_ENV, cwd="/")
        seen = json.loads(out.stdout.decode().strip().splitlines()[-1]) if out.returncode == 0 else None
    except (subprocess.TimeoutExpired, OSError, ValueError, IndexError):
        return None
    keys = {"pid", "uid", "sees_host", "interfaces", "syscall_filter"}
    return seen if isinstance(seen, dict) and keys <= set(seen) else None


def require(level: str) -> Isolation:
    """This machine's isolation; IsolationError (one line with the fix) when below ``level``."""
    isolation = probe()
    if LEVELS.index(isolation.level) < LEVELS.index(level):
        raise IsolationError(f"data.sandbox.require={level} but this machine gives code checks only "
                             f"'{isolation.level}' ({isolation.describe().removeprefix('code checks: ')}); "
                             f"to fix: {FIXES}")
    return isolation
