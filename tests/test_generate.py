"""`python -m neuromas_dist.generate`: the trained graph over a file, one row per question
with every node's text; bad input is one line and exit 2 with nothing written."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from neuromas_dist import generate


@pytest.mark.vllm
@pytest.mark.ray
def test_generate_over_a_jsonl_file_matches_the_greedy_evaluation(trained_run, tmp_path):
    from neuromas_dist.run_dir import run_config
    from neuromas_dist.tasks.data import load_task_data

    heldout = load_task_data(run_config(trained_run).data).eval
    want = {}
    for row in pq.read_table(trained_run / "eval" / "trajectories" / "final_greedy.parquet").to_pylist():
        want.setdefault(row["question_id"], {})[row["node"]] = row["text"]
    src = tmp_path / "questions.jsonl"
    src.write_text("".join(json.dumps({"qid": e.id, "question": e.question}) + "\n" for e in heldout))
    out = tmp_path / "out" / "answers.parquet"
    assert generate.main([str(trained_run), "--input", str(src), "--output", str(out)]) == 0
    rows = pq.read_table(out).to_pylist()
    assert [r["qid"] for r in rows] == [e.id for e in heldout]
    for r in rows:
        assert {n: r[f"node_{n}"] for n in ("L0N0", "L0N1", "L1N0")} == want[r["qid"]]
        assert r["answer"] == r["node_L1N0"] and "parsed_answer" in r


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    assert generate.main([str(tmp_path / "missing"), "--input", "x.jsonl", "--output", str(out)]) == 2
    assert "no such directory" in capsys.readouterr().err and not out.exists()
    assert generate.main([str(tmp_path), "--input", "x.jsonl", "--output", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".jsonl or .parquet" in err
