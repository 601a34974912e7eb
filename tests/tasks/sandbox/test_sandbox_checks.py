"""One code check (tasks/sandbox/checks.py) and the isolation it runs under
(tasks/sandbox/isolation.py): right answers pass, wrong ones fail, the judge only believes
plain data, the machine's isolation is what a jailed candidate reports, and a run that
requires more than the machine gives is refused in one line."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import resource

import pytest

from neuromas_dist.tasks.sandbox import (
    CodeOutcome,
    Isolation,
    IsolationError,
    SandboxLimits,
    check,
    check_async,
    checks,
    isolation,
    job_of,
    probe,
    require,
)

PROMPT = 'def add(a: int, b: int) -> int:\n    """The sum of a and b."""\n'
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
FAST = SandboxLimits(timeout_s=1.0, memory_mb=256, file_mb=1)
GOOD = "    return a + b\n"
FULL = probe().level == "full"
needs_full = pytest.mark.skipif(not FULL, reason="this machine gives code checks less than full isolation")


def run(completion: str, tests: str = TESTS, limits: SandboxLimits = FAST) -> CodeOutcome:
    return check(job_of(PROMPT, completion, tests, "add"), limits)


def test_a_correct_completion_passes_and_wrong_ones_fail():
    assert run(GOOD) == CodeOutcome("passed", "", probe().level)
    assert run("    return a - b\n").status == "failed"
    assert run("    return a +\n")[:2] == ("failed", "SyntaxError: raised by the candidate")  # a syntax error is a wrong answer
    assert run("def add(a, b):\n    return b + a\n").passed  # a whole function replaces the prompt's stub


def test_job_of_keeps_the_completion_out_of_the_judges_program():
    job = job_of(PROMPT, "    return a + b\ndef check(candidate):\n    pass\n", TESTS, "add")
    assert "return a + b" not in job.tests and job.tests.startswith(PROMPT) and TESTS in job.tests
    assert job.program.startswith(PROMPT) and "return a + b" in job.program


def test_values_cross_as_the_types_the_tests_compare():
    tests = ("def check(candidate):\n    r = candidate((1, 2), {3: [4.5]})\n"
             "    assert r == ((1, 2), {3: [4.5]}) and type(r[0]) is tuple and type(r[1][3][0]) is float\n")
    assert run("    return a, b\n", tests).passed


def test_a_builtin_exception_crosses_so_tests_that_expect_one_still_work():
    tests = "def check(candidate):\n    try:\n        candidate(1, 0)\n    except ZeroDivisionError:\n        return\n    assert False\n"
    assert run("    return a // b\n", tests).passed
    assert run("    return a\n", tests).status == "failed"


def test_tests_that_never_call_the_function_cannot_pass():
    assert run(GOOD, "def check(candidate):\n    pass\n") == CodeOutcome("failed", "the tests never called the function",
                                                                   probe().level)


def test_a_test_swallowing_every_exception_does_not_turn_a_timeout_into_a_pass():
    tests = "def check(candidate):\n    try:\n        candidate(1, 2)\n    except:\n        pass\n"
    assert run("    while True:\n        pass\n", tests).status == "timeout"


def test_the_check_does_not_block_the_event_loop():
    async def main() -> tuple[int, str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        outcome = await check_async(job_of(PROMPT, "    while True:\n        pass\n", TESTS, "add"), FAST)
        task.cancel()
        return ticks, outcome.status

    ticks, status = asyncio.run(main())
    assert status == "timeout" and ticks >= 40  # the loop ran on through the 1 s limit


@needs_full
def test_the_probe_reads_what_a_jailed_candidate_sees():
    iso = probe()
    assert (iso.private_fs, iso.pid_namespace, iso.no_network, iso.syscall_filter) == (True, True, True, True)
    assert iso.describe().startswith("code checks: separate judge, resource limits, private fs, pid namespace, "
                                     "no network, syscall filter")
    tests = ("def check(candidate):\n    pid, root, dev = candidate(0, 0)\n    assert pid == 2, pid\n"
             "    assert {'tmp', 'usr'} <= set(root) and not {'etc', 'proc', 'home', 'run', 'var', 'work'} & set(root), root\n"
             "    assert dev == ['full', 'null', 'random', 'urandom', 'zero'], dev\n")
    body = "    import os\n    return os.getpid(), os.listdir('/'), sorted(os.listdir('/dev'))\n"
    assert run(body, tests).passed


@pytest.mark.skipif(probe().plan != "root", reason="a uid per check needs a root parent")
def test_as_root_each_check_runs_as_a_uid_of_its_own():
    tests = f"def check(candidate):\n    assert candidate(0, 0) >= {isolation.UID_BASE}\n"
    assert run("    import os\n    return os.getuid()\n", tests).passed


@needs_full
def test_the_unprivileged_plan_jails_too(monkeypatch):
    """The user-namespace plan (what a non-root worker gets), forced here: the same view."""
    seen = isolation._ask("userns", "/etc/hostname")
    if seen is None:
        pytest.skip("unprivileged user namespaces are disabled here")
    assert seen == {"pid": 2, "uid": 0, "sees_host": False, "interfaces": ["lo"], "syscall_filter": True}
    monkeypatch.setattr(checks, "probe", lambda: Isolation("userns", True, True, True, False, True))
    assert run(GOOD).passed and run("    return a - b\n").status == "failed"
    tests = "def check(candidate):\n    assert candidate(0, 0) == 0\n"  # every capability dropped
    body = "    return int(open('/proc/self/status').read().split('CapEff:')[1].split()[0], 16)\n"
    assert run(body, tests).status == "failed"  # no /proc in the jail either


def test_a_machine_weaker_than_required_is_refused_in_one_line(monkeypatch):
    weak = Isolation("none", False, False, False, False)
    monkeypatch.setattr(isolation, "probe", lambda: weak)
    monkeypatch.setattr(checks, "probe", lambda: weak)
    with pytest.raises(IsolationError) as err:
        require("full")
    line = str(err.value)
    assert "\n" not in line and "data.sandbox.require=full" in line and "missing: private fs, pid namespace" in line
    assert "run the rollout workers as root" in line and "user namespaces" in line
    assert require("process") is weak
    refused = check(job_of(PROMPT, GOOD, TESTS, "add"), FAST, require="full")
    assert refused.status == "crashed" and "below data.sandbox.require=full" in refused.detail


def test_limits_are_a_frozen_config_shape():
    assert dataclasses.asdict(FAST) == FAST.as_dict()


def test_the_judge_is_not_dumpable():
    """So a process of its uid (a candidate under the plain 'none' plan) can neither ptrace it
    nor reach its memory through /proc/<pid>/mem. The tests run in the judge: they can ask."""
    tests = ("def check(candidate):\n    import ctypes\n"
             "    assert ctypes.CDLL(None).prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE\n"
             "    assert candidate(2, 3) == 5\n")
    assert run(GOOD, tests).passed


def test_a_dict_or_int_subclass_answer_is_its_plain_value():
    """A right answer built with Counter or defaultdict passes (the candidate sends the dict it
    equals); a subclass cannot carry its own __eq__ across (the judge rebuilds a real dict)."""
    tests = "def check(candidate):\n    assert candidate('aab', 0) == {'a': 2, 'b': 1}\n    assert candidate('', 0) == {}\n"
    assert run("    import collections\n    return collections.Counter(a)\n", tests).passed
    assert run("    import collections\n    d = collections.defaultdict(int)\n    for c in a:\n        d[c] += 1\n"
               "    return d\n", tests).passed


def test_checks_work_when_the_worker_holds_over_a_thousand_descriptors():
    """A rollout worker (vLLM, Ray, sockets) can have its pipes above fd 1023, where select() fails."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        assert run(GOOD).passed and run("    return a - b\n").status == "failed"
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
