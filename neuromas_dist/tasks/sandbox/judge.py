"""The judge's process: runs the TRUSTED tests of one check and writes the one verdict.

Started by ``checks.py`` as ``python -I -S <this file>``. It reads ``{"program", "entry_point",
"nonce", "timeout_s", "memory_mb", "fds"}`` as JSON on stdin (``fds``: the pipes to and from the
candidate), where ``program`` is the task's own text
(a HumanEval prompt, whose helpers some tests call, then the tests defining ``check``). The
candidate's code is never in this process: ``check`` is handed a :class:`Candidate` that
sends each call's arguments down a pipe to the candidate's sandboxed process and rebuilds
its answer as plain data (``wire.py``). So nothing the candidate does to its interpreter
(patched builtins or ``__eq__``, spoofed classes, frame walks, tracing, a forged exit) can
reach this interpreter, its ``check`` or its verdict.

The verdict goes to a private copy of stdout; the tests' own prints go to /dev/null.
"""

import builtins
import ctypes
import json
import os
import resource
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire


class CandidateLost(BaseException):
    """The candidate stopped answering (time, memory, a crash). A BaseException, so a test's
    ``except Exception`` cannot swallow it into a pass."""

    status = "crashed"


class CandidateTimeout(CandidateLost):
    status = "timeout"


class CandidateMemory(CandidateLost):
    status = "memory"


class CandidateError(Exception):
    """The candidate raised something that is not a builtin exception."""


class Candidate:
    """The function under test, as the tests see it: each call crosses to the candidate's
    process; the reply is a plain value or a builtin exception's name."""

    def __init__(self, calls_fd: int, results_fd: int, deadline: float):
        self.calls_fd, self.results_fd = calls_fd, results_fd
        self.deadline, self.calls = deadline, 0
        self.lost: CandidateLost | None = None

    def __call__(self, *args, **kwargs):
        if self.lost is not None:
            raise self.lost
        self.calls += 1
        try:
            wire.send(self.calls_fd, {"args": list(args), "kwargs": kwargs})
            reply = wire.recv(self.results_fd, self.deadline)
        except TypeError as exc:  # the tests passed something that is not plain data
            raise CandidateError(f"untransportable argument: {exc}") from None
        except wire.WireTimeout:
            self.lost = CandidateTimeout("no answer before the time limit")
        except (wire.WireError, OSError) as exc:
            self.lost = CandidateLost(f"candidate process gone or garbled: {exc}")
        if self.lost is not None:
            raise self.lost
        return _answer(reply, self)


def _answer(reply, candidate: Candidate):
    if type(reply) is dict and set(reply) == {"ok"}:
        return reply["ok"]
    name = reply.get("error") if type(reply) is dict else None
    if name == "MemoryError":
        candidate.lost = CandidateMemory("memory limit")
        raise candidate.lost
    exc_type = getattr(builtins, name, None) if type(name) is str else None
    # A builtin exception type keeps tests that expect one (``except ValueError``) meaningful.
    if isinstance(exc_type, type) and issubclass(exc_type, Exception):
        raise exc_type("raised by the candidate")
    raise CandidateError(f"the candidate failed: {str(name)[:60]}")


def judge(job: dict) -> tuple[str, str]:
    """(status, detail) of ``check(candidate)``."""
    deadline = time.monotonic() + float(job["timeout_s"])
    calls_fd, results_fd = job["fds"]
    candidate = Candidate(calls_fd, results_fd, deadline)
    namespace: dict = {"__name__": "__judge__", job["entry_point"]: candidate}
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, float(job["timeout_s"]) + 0.5)  # tests looping on their own
    try:
        exec(compile(job["program"], "<tests>", "exec"), namespace)
        namespace[job["entry_point"]] = candidate  # the prompt's stub, shadowing the proxy, is not tested
        namespace["check"](candidate)
    except CandidateLost as exc:
        return exc.status, str(exc)
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt included: all fail
        if candidate.lost is not None:  # a bare ``except:`` in the tests swallowed the loss
            return candidate.lost.status, str(candidate.lost)
        return "failed", f"{type(exc).__name__}: {exc}".removesuffix(": ")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if candidate.lost is not None:
        return candidate.lost.status, str(candidate.lost)
    if candidate.calls == 0:  # tests that never call the function cannot tell a right one from a wrong one
        return "failed", "the tests never called the function"
    return "passed", ""


def _alarm(signum, frame):
    raise CandidateTimeout("the tests ran past the time limit")


PR_SET_DUMPABLE = 4


def main():
    # Not dumpable: a process of the same uid (the candidate, where no jail gives it a uid of its
    # own) can neither ptrace this one nor read or write its memory through /proc/<pid>/mem.
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    job = json.loads(sys.stdin.read())
    verdict = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    memory = int(job["memory_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(float(job["timeout_s"])) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    status, detail = judge(job)
    verdict.write(json.dumps({"nonce": job["nonce"], "status": status, "detail": detail[:200]}) + "\n")
    verdict.flush()
    os._exit(0)  # no interpreter teardown: the verdict is out


if __name__ == "__main__":
    main()
