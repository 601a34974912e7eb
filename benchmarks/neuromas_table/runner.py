"""Run the table's arm-seed trainings, one ``neuromas_dist.launch`` process each.

A process per run keeps runs independent (its own embedded Ray, or the cluster of
RAY_ADDRESS under ``ray job submit``) and lets a run that died be rerun alone. A run
whose ``summary.json`` reports its full step count is done and is not run again, so
an interrupted table continues where it stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from benchmarks.neuromas_table.arms import Arm, arm_overrides, run_dir

WALL_FILE = "table_wall_s.json"


class RunFailed(RuntimeError):
    """A training run of the table exited non-zero; the message names it and its log."""


def finished(directory: Path) -> bool:
    """Has the run in ``directory`` completed every configured step and its wall time been recorded?"""
    summary, wall = directory / "summary.json", directory / WALL_FILE
    if not summary.is_file() or not wall.is_file():
        return False
    return "eval_accuracy_after" in json.loads(summary.read_text())


def run_arm(config: str | None, arm: Arm, root: Path, seed: int, extra: list[str],
            say: Callable[[str], None]) -> float:
    """Train one arm for one seed (unless done); returns its wall seconds."""
    directory = run_dir(root, arm.name, seed)
    if finished(directory):
        return float(json.loads((directory / WALL_FILE).read_text())["wall_s"])
    cmd = [sys.executable, "-m", "neuromas_dist.launch", *(["--config", config] if config else []),
           *extra, *arm_overrides(arm, root, seed), "logging.progress=false"]
    directory.mkdir(parents=True, exist_ok=True)
    say(f"{arm.name} seed {seed}: {' '.join(cmd[2:])}")
    t0 = time.perf_counter()
    with open(directory / "launch.log", "w") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if code != 0:
        raise RunFailed(f"{arm.name} seed {seed} exited {code}; see {directory / 'launch.log'}")
    (directory / WALL_FILE).write_text(json.dumps({"wall_s": wall, "command": cmd[1:]}))
    say(f"{arm.name} seed {seed}: done in {wall:.0f} s")
    return wall
