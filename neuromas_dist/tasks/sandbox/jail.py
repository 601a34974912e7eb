"""The candidate's jail: kernel namespaces, a private root filesystem, its own identity.

Imported by ``candidate.py`` (stdlib and ctypes only). :func:`enter` turns the calling
process into the jailed candidate or never returns. The process tree of one check:

    candidate.py (P0, the parent's child; waits, then exits with the jail's status)
      └─ init (pid 1 of a new PID namespace; trusted: builds the root, then only waits)
           └─ candidate (pid 2; no privileges; runs the untrusted code)

Plans, strongest first (``checks.py`` picks the first the machine allows, by :func:`probe`):

- ``root``: the parent is root. New mount, PID, network, IPC and UTS namespaces; the candidate
  runs as a uid of its own (a fresh uid per check: nothing else on the machine is that user).
- ``userns``: the parent is not root but unprivileged user namespaces are enabled. The same
  namespaces inside a user namespace; the candidate keeps uid 0 *of that namespace* with
  every capability dropped (bounding set, effective, permitted) and no_new_privs.
- ``none``: neither works. Only the resource limits and a temporary working directory; the
  candidate can read and write what the parent's user can.

The root the candidate sees (``pivot_root``, the old root detached): ``/usr`` and the
``/lib*``, ``/bin`` links read-only, the standard library's directory read-only, every
directory of installed packages hidden (the interpreter's and the system's),
``/dev/{null,zero,full,random,urandom}``, and a private ``/tmp`` (a small tmpfs, its working
directory) that vanishes with the namespace. No ``/proc``, no ``/etc``, no ``/run`` or host
``/tmp``: no host files, data sets, Ray sockets or other checks.
The network namespace has only a loopback that is down (abstract unix sockets are per
network namespace). A seccomp filter refuses the syscalls that reach state no namespace
covers (kernel keyrings are per uid) or that a Python function never needs (``BLOCKED``).
Init dies with P0 (``PR_SET_PDEATHSIG``), and with init the kernel kills
every process of the namespace, whatever the candidate did to its session or process group.
"""

import ctypes
import os
import platform
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
NAMESPACES = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 0x1, 0x2, 0x4, 0x20
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_SECCOMP, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 22, 24, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}
CAP_V3 = 0x20080522
SETUP_FAILED = 71  # exit status of a jail that could not be built: the candidate never ran
DEVICES = ("null", "zero", "full", "random", "urandom")
HOST_DIRS = ("usr", "lib", "lib64", "lib32", "libx32", "bin", "sbin")
ROOT_CANDIDATES = ("/mnt", "/media", "/srv", "/tmp")  # an existing directory to build the new root on
PLANS = ("root", "userns", "none")
# Syscalls the candidate gets EPERM for (seccomp), by architecture: its audit id, then numbers.
# Kernel keyrings live per uid *outside* every namespace (a check could leave keys behind and a
# later check with the same uid read them); the rest would only widen the kernel surface a
# Python function never needs: new namespaces, mounts, tracing, bpf, perf, io_uring, userfaultfd.
BLOCKED = ("add_key", "request_key", "keyctl", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot",
           "ptrace", "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", "userfaultfd",
           "io_uring_setup", "io_uring_enter", "io_uring_register", "kexec_load", "init_module", "finit_module")
SYSCALLS = {
    "x86_64": (0xC000003E, (248, 249, 250, 272, 308, 165, 166, 155, 161, 101, 310, 311, 321, 298, 323, 425, 426, 427,
                            246, 175, 313)),
    "aarch64": (0xC00000B7, (217, 218, 219, 97, 268, 40, 39, 41, 51, 117, 270, 271, 280, 241, 282, 425, 426, 427,
                             104, 105, 273)),
}
X32_BIT = 0x40000000  # x86_64's x32 ABI: the same calls under other numbers, refused wholesale

_libc = ctypes.CDLL(None, use_errno=True)


class JailError(OSError):
    pass


def _call(name: str, *args) -> int:
    result = getattr(_libc, name)(*args)
    if result != 0:
        errno = ctypes.get_errno()
        raise JailError(errno, f"{name}: {os.strerror(errno)}")
    return result


def _enc(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _mount(source, target, fstype, flags, data=None) -> None:
    _call("mount", _enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags), _enc(data))


def _bind(source: str, target: str, device: bool = False) -> None:
    """A read-only bind (device files keep working: no MS_NODEV on them)."""
    _mount(source, target, None, MS_BIND)
    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | (0 if device else MS_NODEV))


def enter(plan: str, uid: int, limits: dict, keep_fds: tuple[int, ...]) -> None:
    """Become the jailed candidate under ``plan`` (see the module doc), resource limits set.
    Returns in the candidate only; P0 and init exit from here with the candidate's status."""
    if plan == "none":
        _drop(plan, uid)
        set_limits(limits)
        return
    ids = os.getuid(), os.getgid()  # after unshare they read as the overflow id until mapped
    _call("unshare", NAMESPACES | (CLONE_NEWUSER if plan == "userns" else 0))
    if plan == "userns":
        _map_ids(*ids)
    _wait_for(os.fork(), keep_fds)  # P0 waits; the child is pid 1 of the new namespace
    _call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    try:
        _build_root(int(limits["file_mb"]), uid if plan == "root" else 0)
    except Exception:  # noqa: BLE001 - any failure here means no jail: the candidate must not run
        os._exit(SETUP_FAILED)
    _wait_for(os.fork(), keep_fds)  # init waits; the child is the candidate
    _drop(plan, uid)
    set_limits(limits)


def _wait_for(child: int, keep_fds: tuple[int, ...]) -> None:
    """In the parent: let go of the pipes (so the judge sees EOF when the candidate dies),
    wait for ``child`` and exit with its status. Returns in the child."""
    if child == 0:
        return
    for fd in keep_fds:
        try:
            os.close(fd)
        except OSError:  # a probe has no pipes
            pass
    while True:
        try:
            pid, status = os.waitpid(-1, 0)  # as pid 1, also reap what the candidate orphaned
        except ChildProcessError:
            os._exit(SETUP_FAILED)
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _map_ids(uid: int, gid: int) -> None:
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def _build_root(tmp_mb: int, owner: int) -> None:
    """The candidate's filesystem (module doc), then ``pivot_root`` into it."""
    stdlib = os.path.dirname(os.__file__)
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing of what follows propagates to the host
    base = next(d for d in ROOT_CANDIDATES if os.path.isdir(d) and not stdlib.startswith(d + "/"))
    _mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for name in HOST_DIRS:
        host, inside = f"/{name}", f"{base}/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), inside)
        elif os.path.isdir(host):
            os.mkdir(inside)
            _bind(host, inside)
    if not stdlib.startswith("/usr/"):
        _bind_stdlib(stdlib, base)
    _hide_packages(stdlib, base)
    os.mkdir(f"{base}/dev")
    for name in DEVICES:
        open(f"{base}/dev/{name}", "w").close()
        _bind(f"/dev/{name}", f"{base}/dev/{name}", device=True)
    os.mkdir(f"{base}/tmp")
    _mount("tmpfs", f"{base}/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={max(tmp_mb, 1)}m,mode=0700")
    os.chown(f"{base}/tmp", owner, owner)
    os.mkdir(f"{base}/.old")
    _pivot(base)


def _bind_stdlib(stdlib: str, base: str) -> None:
    os.makedirs(base + stdlib)
    _bind(stdlib, base + stdlib)


def _hide_packages(stdlib: str, base: str) -> None:
    """An empty read-only tmpfs over every directory of installed packages the jail would show
    (the interpreter's own, and the system's under /usr): no package, and no package's data
    (a benchmark's answer key), is readable inside."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for where in (f"{stdlib}/site-packages", f"{stdlib}/dist-packages", "/usr/lib/python3/dist-packages",
                  f"/usr/lib/{version}/site-packages", f"/usr/local/lib/{version}/dist-packages",
                  f"/usr/local/lib/{version}/site-packages"):
        if os.path.isdir(base + where):
            _mount("tmpfs", base + where, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k")


def _pivot(base: str) -> None:
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise JailError(0, f"pivot_root: unknown syscall number on {platform.machine()}")
    _call("syscall", ctypes.c_long(number), os.fsencode(base), os.fsencode(base + "/.old"))
    os.chdir("/")
    _call("umount2", b"/.old", 2)
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chdir("/tmp")


def _drop(plan: str, uid: int) -> None:
    """The candidate's identity: no privilege it could use to undo the jail."""
    if plan == "root" or (plan == "none" and os.geteuid() == 0):
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # from root to a non-zero uid: every capability goes
    elif plan == "userns":
        for cap in range(64):  # the bounding set first (needs CAP_SETPCAP), then what we hold
            if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                break
        header = (ctypes.c_uint32 * 2)(CAP_V3, 0)
        _call("capset", header, (ctypes.c_uint32 * 6)())
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _filter_syscalls()


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def seccomp_program(arch: str) -> list[tuple[int, int, int, int]]:
    """A classic-BPF seccomp filter: another architecture's calls kill the process, BLOCKED
    calls (and x32 ones) return EPERM, everything else is allowed."""
    audit, numbers = SYSCALLS[arch]
    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, eperm, kill = 0x7FFF0000, 0x00050001, 0x80000000
    n = len(numbers)
    errno_at, kill_at = 5 + n, 6 + n
    prog = [(ld, 0, 0, 4), (jeq, 0, kill_at - 2, audit), (ld, 0, 0, 0),
            (jge, errno_at - 4, 0, X32_BIT if arch == "x86_64" else 0xFFFFFFFF)]
    prog += [(jeq, errno_at - (4 + i + 1), 0, nr) for i, nr in enumerate(numbers)]
    return prog + [(ret, 0, 0, allow), (ret, 0, 0, eperm), (ret, 0, 0, kill)]


def _filter_syscalls() -> None:
    if platform.machine() not in SYSCALLS:
        return  # the probe reports syscall_filter False there
    prog = seccomp_program(platform.machine())
    filters = (_SockFilter * len(prog))(*(_SockFilter(*ins) for ins in prog))
    fprog = _SockFprog(len(prog), filters)
    _call("prctl", PR_SET_SECCOMP, 2, ctypes.byref(fprog), 0, 0)  # SECCOMP_MODE_FILTER


def unshare_refused() -> bool:
    """Is the seccomp filter on? (``unshare(0)`` does nothing and succeeds without it.)"""
    return _libc.unshare(0) != 0 and ctypes.get_errno() == 1


def set_limits(limits: dict) -> None:
    """CPU time, address space, file size, open files, processes (1: this one, so no fork),
    no core files (a limit of 1, not 0: with a piped core_pattern the kernel ignores 0 and
    would start the host's crash handler; 1 aborts every core dump)."""
    memory = int(limits["memory_mb"]) << 20
    for name, value in (("RLIMIT_AS", memory), ("RLIMIT_DATA", memory), ("RLIMIT_CPU", int(limits["timeout_s"]) + 1),
                        ("RLIMIT_FSIZE", int(limits["file_mb"]) << 20), ("RLIMIT_NOFILE", 64),
                        ("RLIMIT_NPROC", 1), ("RLIMIT_CORE", 1)):
        resource.setrlimit(getattr(resource, name), (value, value))
