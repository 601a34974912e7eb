"""Run the table's arm-seed trainings, one ``neuromas_dist.launch`` process each.

A process per run keeps runs independent (its own embedded Ray, or the cluster of
RAY_ADDRESS under ``ray job submit``) and lets a run that died be rerun alone. ``--quick``
runs them in this process instead, on one embedded Ray (``in_process``): the same
``launch.main`` without a new interpreter's imports and a new Ray each time. A run
that finished with the same command is not run again, so an interrupted table continues
where it stopped; a run that did not finish is deleted and started over (a half-written
metrics file would otherwise get a second copy of its steps); a finished run of another
command is an error, never silently reused.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Callable

from benchmarks.neuromas_table.arms import Arm, arm_overrides, run_dir

WALL_FILE = "table_wall_s.json"


class RunFailed(RuntimeError):
    """A training run of the table exited non-zero; the message names it and its log."""


def finished(directory: Path, command: list[str]) -> bool:
    """Did ``command`` run to the end in ``directory``? Raises RunFailed if another command did."""
    summary, wall = directory / "summary.json", directory / WALL_FILE
    if not summary.is_file() or not wall.is_file() or "eval_accuracy_after" not in json.loads(summary.read_text()):
        return False
    if json.loads(wall.read_text())["command"] != command:
        raise RunFailed(f"{directory} holds a finished run of another command (other overrides or steps); "
                        "give this table its own --runs")
    return True


def wall_seconds(directory: Path) -> float:
    """The recorded wall time of a finished table run (nan if it has none)."""
    path = directory / WALL_FILE
    return float(json.loads(path.read_text())["wall_s"]) if path.is_file() else float("nan")


def run_arm(config: str, arm: Arm, root: Path, seed: int, extra: list[str], say: Callable[[str], None],
            in_process: bool = False) -> float:
    """Train one arm for one seed (unless done); returns its wall seconds."""
    cmd = [sys.executable, "-m", "neuromas_dist.launch", "--config", config, *extra,
           *arm_overrides(arm, root, seed), "logging.progress=false"]
    return run_command(run_dir(root, arm.name, seed), cmd, f"{arm.name} seed {seed}", say, in_process)


def run_command(directory: Path, cmd: list[str], label: str, say: Callable[[str], None],
                in_process: bool = False) -> float:
    """Run one training ``cmd`` (a launch whose run dir is ``directory``) unless it finished
    there already; returns its wall seconds."""
    if finished(directory, cmd[1:]):
        return wall_seconds(directory)
    shutil.rmtree(directory, ignore_errors=True)  # an unfinished attempt: start over
    directory.mkdir(parents=True)
    say(f"{label}: {' '.join(cmd[2:])}")
    t0 = time.perf_counter()
    with open(directory / "launch.log", "w") as log:
        code = launch_here(cmd, log) if in_process else subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if code != 0:
        raise RunFailed(f"{label} exited {code}; see {directory / 'launch.log'}")
    (directory / WALL_FILE).write_text(json.dumps({"wall_s": wall, "command": cmd[1:]}))
    say(f"{label}: done in {wall:.0f} s")
    return wall


def launch_here(cmd: list[str], log: IO[str]) -> int:
    """``python -m neuromas_dist.launch ARGS`` as a call in this process, its output to ``log``.
    The runs share the interpreter's imports and the Ray the first one starts (about 15 s of a
    launch's start on 2 cores); a run that raises ends the table, as its process would."""
    from neuromas_dist import launch

    if cmd[1:3] != ["-m", "neuromas_dist.launch"]:
        raise ValueError(f"not a launch command: {' '.join(cmd[1:3])}")
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        return launch.main(cmd[3:])
