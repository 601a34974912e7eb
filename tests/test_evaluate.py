"""`python -m neuromas_dist.evaluate`: bad input is one line and exit 2, nothing started.
(The real evaluation of a trained run is in tests/driver/test_e2e.py.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from neuromas_dist import evaluate


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neuromas_dist.evaluate", *args], capture_output=True, text=True,
                          timeout=120)


def test_help_works():
    out = _run("--help")
    assert out.returncode == 0 and "RUN_DIR" in out.stdout and "--no-ablation" in out.stdout


@pytest.mark.parametrize("make, says", [
    (lambda p: p / "missing", "no such directory"),
    (lambda p: p, "no config.yaml"),
])
def test_bad_path_is_one_line_and_exit_2(tmp_path, make, says):
    out = _run(str(make(tmp_path)))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and says in out.stderr and "Traceback" not in out.stderr


def _fake_run(path, config="trainer:\n  steps: 1\n", weights=True):
    """A run directory with a config and an adapters/ dir (one empty weights file, or none)."""
    (path / "config.yaml").write_text(config)
    (path / "adapters" / "L0N0").mkdir(parents=True)
    if weights:
        (path / "adapters" / "L0N0" / "adapter_model.safetensors").write_bytes(b"")
    return path


def test_run_without_adapters_is_one_line(tmp_path):
    _fake_run(tmp_path, weights=False)
    assert evaluate.main([str(tmp_path)]) == 2
    out = _run(str(tmp_path))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "no adapters/" in out.stderr


def test_bad_config_in_the_run_dir_names_the_key(tmp_path, capsys):
    _fake_run(tmp_path, config="trainer:\n  stepz: 1\n")
    assert evaluate.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "trainer.stepz" in err and err.count("\n") == 1


def test_adapters_without_their_config_are_one_line(tmp_path, capsys):
    """adapter_model.safetensors without adapter_config.json: caught before Ray starts."""
    _fake_run(tmp_path)
    assert evaluate.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no PEFT adapter directories" in err


def test_data_that_is_not_there_or_would_replace_the_run_s_eval_is_one_line(tmp_path, capsys):
    _fake_run(tmp_path)
    assert evaluate.main([str(tmp_path), "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert "--data" in capsys.readouterr().err
    data = tmp_path / "set.jsonl"
    data.write_text('{"question": "q", "answer": "1"}\n')
    assert evaluate.main([str(tmp_path), "--data", str(data), "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite-eval" in err


def test_negative_counts_are_refused_by_the_parser(tmp_path):
    out = _run(str(tmp_path), "--samples", "-1")
    assert out.returncode == 2 and "--samples" in out.stderr and "Traceback" not in out.stderr


def test_the_evaluated_graph_is_the_one_the_run_ended_with(tmp_path):
    """summary.json's widths win (a run may have grown); the config's edges apply only to
    the configured widths."""
    import json

    from neuromas_dist.config import load_config
    from neuromas_dist.run_dir.finished import run_topology

    cfg = load_config(None, ["topology.widths=[2, 1]", "topology.edges=[L0N0->L1N0, L0N1->L1N0]"])
    assert run_topology(cfg, tmp_path).widths == (2, 1)
    (tmp_path / "summary.json").write_text(json.dumps({"topology": [4, 2, 1]}))
    grown = run_topology(cfg, tmp_path)
    assert grown.widths == (4, 2, 1) and grown.sink == "L2N0" and len(grown.edges) == 4 * 2 + 2
