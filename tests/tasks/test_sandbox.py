"""The code sandbox (tasks/sandbox.py): a correct completion passes, a wrong one fails, and
every adversarial completion scores 0 without touching the machine or this process, which
keeps serving (checked after every case: a correct completion still passes, no process of
theirs is left, the files outside stay as they were)."""

from __future__ import annotations

import asyncio
import os
import time

import psutil
import pytest

from neuromas_dist.tasks.sandbox import SandboxLimits, check, check_async, program_of

PROMPT = 'def add(a: int, b: int) -> int:\n    """The sum of a and b."""\n'
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
FAST = SandboxLimits(timeout_s=1.0, memory_mb=256, file_mb=1)
GOOD = "    return a + b\n"


def run(completion: str, limits: SandboxLimits = FAST):
    return check(program_of(PROMPT, completion, TESTS), "add", limits)


@pytest.fixture
def bystander(tmp_path):
    """A file outside the sandbox that no candidate may change, and the processes before."""
    path = tmp_path / "keep.txt"
    path.write_text("untouched")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield path
    assert path.read_text() == "untouched", "a candidate changed a file outside its directory"
    assert not (tmp_path / "pwned").exists()
    time.sleep(0.1)
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not left, f"processes left behind: {left}"
    assert run(GOOD).passed, "the sandbox stopped serving after the adversarial case"


def test_a_correct_completion_passes_and_a_wrong_one_fails():
    assert run(GOOD).status == "passed"
    assert run("    return a - b\n").status == "failed"
    assert run("    return a +\n").status == "failed"  # a syntax error is a wrong answer


ADVERSARIAL = {
    "infinite loop": ("    while True:\n        pass\n", {"timeout"}),
    "memory bomb": ("    x = [0] * (10 ** 10)\n    return a + b\n", {"memory", "failed", "crashed"}),
    "growing memory": ("    x = []\n    while True:\n        x.append(' ' * 10 ** 6)\n", {"memory", "failed", "crashed", "timeout"}),
    "fork bomb": ("    import os\n    while True:\n        os.fork()\n", {"failed"}),
    "fork bomb through libc": ("    import ctypes\n    while True:\n        ctypes.CDLL(None).fork()\n", {"failed"}),
    "os.system": ("    import os\n    os.system('touch {tmp}/pwned')\n    return a + b\n", {"failed"}),
    "subprocess": ("    import subprocess\n    subprocess.run(['touch', '{tmp}/pwned'])\n    return a + b\n",
                   {"failed"}),
    "posix_spawn": ("    import os\n    os.posix_spawn('/usr/bin/touch', ['touch', '{tmp}/pwned'], {{}})\n"
                    "    return a + b\n", {"failed"}),
    "write outside": ("    open('{tmp}/keep.txt', 'w').write('changed')\n    return a + b\n", {"failed"}),
    "write outside by fd": ("    import os\n    os.open('{tmp}/pwned', os.O_CREAT | os.O_WRONLY)\n    return a + b\n",
                            {"failed"}),
    "delete outside": ("    import os\n    os.remove('{tmp}/keep.txt')\n    return a + b\n", {"failed"}),
    "sys.exit(0) before the tests": ("    return a + b\nimport sys\nsys.exit(0)\n", {"failed"}),
    "os._exit(0) before the tests": ("    return a + b\nimport os\nos._exit(0)\n", {"failed"}),
    "huge stdout": ("    while True:\n        print('x' * 10 ** 6)\n", {"memory", "timeout", "failed", "crashed"}),
    "huge output to the raw fds": ("    import os\n    for fd in range(1, 64):\n        try:\n"
                                   "            os.write(fd, b'{{\"status\": \"passed\"}}\\n' * 100000)\n"
                                   "        except OSError:\n            pass\n    return a - b\n",
                                   {"failed", "timeout", "crashed"}),
    "forged verdict": ("    import os, json\n    for fd in range(3, 64):\n        try:\n"
                       "            os.write(fd, (json.dumps({{'status': 'passed'}}) + '\\n').encode())\n"
                       "        except OSError:\n            pass\n    return a - b\n", {"failed"}),
    "always-equal object": ("    class Yes:\n        def __eq__(self, other):\n            return True\n"
                            "    return Yes()\n", {"failed"}),
    "always-equal inside a list": ("    class Yes(int):\n        def __eq__(self, other):\n            return True\n"
                                   "    return Yes(0)\n", {"failed"}),
    "patching isinstance and the test helper": ("    import builtins\n    builtins.isinstance = lambda *a: True\n"
                                                "    return a - b\ndef check(candidate):\n    pass\n", {"failed"}),
    "network": ("    import urllib.request\n    urllib.request.urlopen('http://127.0.0.1:9', timeout=1)\n"
                "    return a + b\n", {"failed"}),
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_completion_scores_zero_and_the_sandbox_keeps_serving(name, bystander):
    completion, allowed = ADVERSARIAL[name]
    outcome = run(completion.format(tmp=bystander.parent))
    assert not outcome.passed and outcome.status in allowed, outcome


def test_the_check_does_not_block_the_event_loop():
    async def main() -> tuple[int, str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        outcome = await check_async(program_of(PROMPT, "    while True:\n        pass\n", TESTS), "add", FAST)
        task.cancel()
        return ticks, outcome.status

    ticks, status = asyncio.run(main())
    assert status == "timeout" and ticks >= 40  # the loop ran on through the 1 s limit


@pytest.mark.skipif(os.geteuid() != 0, reason="the privilege drop applies to a root parent")
def test_as_root_the_candidate_runs_as_nobody():
    tests = "def check(candidate):\n    import os\n    assert os.geteuid() == 65534\n"
    assert check(program_of(PROMPT, GOOD, tests), "add", FAST).passed


def test_a_candidate_replacing_the_json_encoder_cannot_rewrite_its_verdict():
    """The verdict (with the nonce) is formatted without the json module the candidate can patch."""
    evil = ("    return a - b\nimport json\nclass E(json.JSONEncoder):\n    def encode(self, o):\n"
            "        if isinstance(o, dict):\n            o = dict(o, status='passed')\n"
            "        return super().encode(o)\njson._default_encoder = E()\njson.dumps = lambda o, **k: E().encode(o)\n")
    assert run(evil).status == "failed"
