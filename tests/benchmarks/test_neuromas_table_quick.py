"""``python -m benchmarks.neuromas_table --quick`` end to end on the real stack (vLLM, Ray,
DeepSpeed, Arrow): every arm produces a row with an interval, the single-LLM arm has
NeuroMAS-3's LoRA parameter count, and growth is exactly what the config says."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from benchmarks.neuromas_table.arms import TableSpec, run_dir
from benchmarks.neuromas_table.results import Row, row_scores, rows
from neuromas_dist.adapters.peft_io import read_adapter_set

CARRIED = {"L1N0": "L0N0", "L1N1": "L0N1", "L2N0": "L1N0"}  # grown node <- NeuroMAS-3 node
NEW = ("L0N0", "L0N1", "L0N2", "L0N3")


def _table(args):
    return subprocess.run([sys.executable, "-m", "benchmarks.neuromas_table", *args], capture_output=True,
                          text=True, timeout=1500)


@pytest.fixture(scope="module")
def quick(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("table")
    proc = _table(["--quick", "--seeds", "1", "--runs", str(root), "--out", str(root)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, json.loads((root / "neuromas_table.json").read_text())


def test_every_row_has_an_accuracy_with_its_interval(quick):
    root, result = quick
    spec = TableSpec(2, 3, (0,))
    assert list(result["rows"]) == [r.key for r in rows(spec)]
    for key, row in result["rows"].items():
        a = row["accuracy"]
        assert a["ci_lo"] <= a["mean"] <= a["ci_hi"] and a["n"] == 10, key
        assert len(row["per_seed"]) == 1 and row["per_seed"][0]["run_wall_s"] > 0, key
    assert all("diff" in c for c in result["comparisons"])
    assert (root / "neuromas_table.md").read_text().count("\n| ") >= len(result["rows"])
    assert (root / "neuromas_table.png").stat().st_size > 0


def test_single_llm_has_neuromas3_s_lora_parameter_count(quick):
    _, result = quick
    r = result["rows"]
    assert r["single"]["lora_params"] == r["neuromas3"]["lora_params"] == result["lora"]["small_total"] > 0
    assert r["single"]["llm_calls_per_question"] == 1 and r["single_vote3"]["llm_calls_per_question"] == 3
    assert r["neuromas7_scratch"]["llm_calls_per_question"] == 7 == r["base_vote7"]["llm_calls_per_question"]


@pytest.mark.parametrize("mode", ["gated", "carry"])
def test_grown_run_starts_from_neuromas3_s_adapters_and_zero_new_ones(quick, mode):
    root, _ = quick
    small = read_adapter_set(run_dir(root, "neuromas3", 0) / "adapters", version=0)
    start = read_adapter_set(run_dir(root, f"neuromas7_grown_{mode}", 0) / "adapters_start", version=0)
    for new, old in CARRIED.items():
        assert start.tensors[new].keys() == small.tensors[old].keys()
        for key, tensor in small.tensors[old].items():
            assert torch.equal(start.tensors[new][key], tensor), (new, key)
    for new in NEW:  # zero contribution from the adapter: LoRA B = 0
        b = [t for k, t in start.tensors[new].items() if ".lora_B." in k]
        assert b and all(torch.count_nonzero(t) == 0 for t in b), new


def test_gated_growth_starts_as_exactly_the_small_graph(quick):
    root, result = quick
    grown = Row("g", "", "neuromas7_grown_gated", "before", 0, (4, 2, 1), 2)
    small = Row("s", "", "neuromas3", "final", 0, (2, 1), 2)
    got = row_scores(root, grown, 0, None)
    want = row_scores(root, small, 0, got.question_ids)
    assert got.scores.tolist() == want.scores.tolist()  # the same answer right or wrong on every question
    assert got.calls == want.calls == 3  # the new nodes did not run
    assert result["rows"]["grown_carry_start"]["llm_calls_per_question"] == 7
    summary = json.loads((run_dir(root, "neuromas7_grown_gated", 0) / "summary.json").read_text())
    assert summary["growth_gate"]["carried"] == {v: k for k, v in CARRIED.items()}


def test_a_rerun_skips_finished_runs_and_rewrites_the_table(quick):
    root, result = quick
    proc = _table(["--quick", "--seeds", "1", "--runs", str(root), "--out", str(root)])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "done in" not in proc.stdout  # no run trained again
    again = json.loads((root / "neuromas_table.json").read_text())
    assert again["rows"] == result["rows"]


def test_three_to_five_to_seven_grows_from_the_grown_five(quick):
    """The 3 -> 5 -> 7 arm starts from the NeuroMAS-5 arm's final adapters (carried nodes
    equal, the widened front layer copied), and both have rows in the table."""
    root, result = quick
    five = read_adapter_set(run_dir(root, "neuromas5_grown", 0) / "adapters", version=0)
    start = read_adapter_set(run_dir(root, "neuromas7_grown_via5", 0) / "adapters_start", version=0)
    for grown, source in {"L2N0": "L2N0", "L1N0": "L1N0", "L1N1": "L1N1"}.items():
        for key, value in five.tensors[source].items():
            assert torch.equal(start.tensors[grown][key], value), (grown, key)
    assert {"neuromas5_grown", "grown_via5"} <= set(result["rows"])
    assert result["rows"]["neuromas5_grown"]["lora_params"] == 5 * result["rows"]["neuromas3"]["lora_params"] // 3
