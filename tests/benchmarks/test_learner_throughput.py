"""The learner options benchmark at toy scale: every option measured on the same batches,
the pad share of padded passes counted from the passes the learner really ran."""

from __future__ import annotations

import json
import sys

from benchmarks import learner_throughput


def test_options_benchmark_at_toy_scale(tmp_path, tiny_model_dir, monkeypatch):
    out = tmp_path / "options.json"
    monkeypatch.setattr(sys, "argv", [
        "learner_throughput", "--model", str(tiny_model_dir), "--nodes", "3", "--questions", "2", "--samples", "2",
        "--steps", "1", "--lengths", "gsm8k-like", "--length-scale", "0.05", "--micro-batch", "4", "--budget", "40",
        "--options", ",".join(learner_throughput.OPTIONS), "--out", str(out)])
    learner_throughput.main()
    result = json.loads(out.read_text())["options"]
    options = result["options"]
    assert set(options) == {"plain_peft", *learner_throughput.OPTIONS}
    assert all(v["real_tokens_per_s"] > 0 and v["peak_mib"] > 0 for v in options.values())
    assert options["token_budget_packed"]["pad_fraction"] == 0.0
    assert 0.0 < options["before"]["pad_fraction"] < 1.0  # GSM8K-like rows differ in length
    # 12 rows a step, 4 a pass per node: 3 passes; a 40-token budget cuts rows of ~30 into more
    assert options["before"]["passes_per_step"] == 3
    assert options["token_budget"]["passes_per_step"] > 3
