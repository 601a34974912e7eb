"""Which table runs count as done: same command and finished, else started over."""

from __future__ import annotations

import json

import pytest

from benchmarks.neuromas_table.runner import WALL_FILE, RunFailed, finished


def _run_dir(tmp_path, command, after=True):
    (tmp_path / "summary.json").write_text(json.dumps({"eval_accuracy_after": 0.5} if after else {"steps": 3}))
    (tmp_path / WALL_FILE).write_text(json.dumps({"wall_s": 12.0, "command": command}))
    return tmp_path


def test_a_finished_run_of_the_same_command_is_done(tmp_path):
    assert finished(_run_dir(tmp_path, ["-m", "x", "a=1"]), ["-m", "x", "a=1"])


def test_an_unfinished_run_is_not_done(tmp_path):
    assert not finished(_run_dir(tmp_path, ["-m", "x"], after=False), ["-m", "x"])
    assert not finished(tmp_path / "missing", ["-m", "x"])


def test_a_finished_run_of_another_command_is_an_error(tmp_path):
    with pytest.raises(RunFailed, match="another command"):
        finished(_run_dir(tmp_path, ["-m", "x", "trainer.steps=3"]), ["-m", "x", "trainer.steps=4"])
