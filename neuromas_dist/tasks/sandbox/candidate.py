"""The candidate's process: runs ONE untrusted program in its jail and answers the judge's calls.

Started by ``checks.py`` as ``python -I -S <this file>`` (a script: nothing of the package is
imported here). It reads ``{"program", "entry_point", "plan", "uid", "limits", "fds"}`` as JSON
on stdin, enters the jail (``jail.py``), runs the program, then answers each call that arrives
on the first of ``fds`` with one reply on the second until the judge closes the pipe. Nothing here decides a
verdict: the tests and the verdict live in the judge's process (``judge.py``), and whatever
this process sends is only ever read as plain data (``wire.py``). So this file needs no
guard against the code it runs; the kernel's limits and the jail bound what that code can
do to the machine.

``{"probe": plan, "marker": path, "limits": ...}`` instead reports, from inside the jail, what
the plan really gave (pid, uid, whether a host file is visible, network interfaces).
"""

import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jail
import wire


def plain(value):
    """Subclasses of the plain types as their base type (a ``Counter`` or ``defaultdict`` is the
    dict a test compares with; ``bool`` stays ``bool``). Only a courtesy to right answers: the
    judge rebuilds whatever arrives as real builtins, so nothing here needs to be trusted."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    for container in (list, tuple, frozenset, set):
        if isinstance(value, container):
            return container(plain(v) for v in value)
    return value


def reply(fn, call) -> bytes:
    """The candidate's answer to one call, encoded: ``{"ok": value}`` or ``{"error": name}``."""
    try:
        return wire.encode({"ok": plain(fn(*call["args"], **call["kwargs"]))})
    except MemoryError:
        return wire.encode({"error": "MemoryError"})
    except BaseException as exc:  # noqa: BLE001 - SystemExit included: any failure is an answer
        return wire.encode({"error": type(exc).__name__})


def load(program: str, entry_point: str):
    """The function under test; a program that fails to load answers every call with its error."""
    namespace = {"__name__": "__candidate__"}
    try:
        exec(compile(program, "<candidate>", "exec"), namespace)
        return namespace[entry_point]
    except BaseException as exc:  # noqa: BLE001 - a syntax error or a missing function is a wrong answer
        error = exc if isinstance(exc, Exception) else RuntimeError(type(exc).__name__)  # `exc` dies with the block

        def failed(*args, **kwargs):
            raise error

        return failed


def serve(fn, calls_fd: int, results_fd: int) -> None:
    while True:
        try:
            call = wire.recv(calls_fd)
        except wire.WireError:  # the judge is done (or gone)
            return
        wire.send_bytes(results_fd, reply(fn, call))


def probe(job: dict) -> None:
    report = {"pid": os.getpid(), "uid": os.getuid(), "sees_host": os.path.exists(job["marker"]),
              "interfaces": sorted(name for _, name in socket.if_nameindex()),
              "syscall_filter": jail.unshare_refused()}
    os.write(1, (json.dumps(report) + "\n").encode())


def main() -> None:
    job = json.loads(sys.stdin.read())
    if "probe" in job:
        jail.enter(job["probe"], int(job["uid"]), job["limits"], ())
        probe(job)
        os._exit(0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    calls_fd, results_fd = job["fds"]
    jail.enter(job["plan"], int(job["uid"]), job["limits"], (calls_fd, results_fd))
    serve(load(job["program"], job["entry_point"]), calls_fd, results_fd)
    os._exit(0)


if __name__ == "__main__":
    main()
