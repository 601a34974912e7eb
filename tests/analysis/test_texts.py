"""`python -m neuromas_dist.analysis.texts`: per-node text summaries of a run's trajectories."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from neuromas_dist.analysis.texts import load_rows, main, summarize
from neuromas_dist.trajectories.schema import concat, make_row, to_record_batch

Q = "Let x = (4 + 8) mod 10 and y = (8 * 7) mod 10. What is (x + y) mod 10?"  # x=2, y=6, answer 8


def _row(sample, node, text):
    return make_row(node, "q", sample, step=1, response_ids=[5, 6], logprobs=[-0.1, -0.2], text=text, question=Q,
                    gold_answer="8")


SAMPLES = [  # (L0N0, L0N1, L1N0)
    ("x = (4 + 8) mod 10 = 2.", "y = (8 * 7) mod 10 = 6.", "The answer is 8."),
    ("y = (8 * 7) mod 10 = 6.", "y = (8 * 7) mod 10 = 6.", "y = (8 * 7) mod 10 = 6."),
]


@pytest.fixture
def run_dir(tmp_path):
    rows = [_row(k, n, t) for k, texts in enumerate(SAMPLES) for n, t in zip(("L0N0", "L0N1", "L1N0"), texts)]
    (tmp_path / "trajectories").mkdir()
    pq.write_table(concat([to_record_batch(rows)]), tmp_path / "trajectories" / "step_000001.parquet")
    return tmp_path


def test_summary_of_hand_made_samples(run_dir):
    s = summarize(load_rows(run_dir))
    assert s["samples"] == 2
    assert s["same_text_all_non_sink"] == 0.5  # sample 1: both first-layer nodes wrote y
    assert s["sink_repeats_an_input"] == 0.5  # sample 1: the sink repeated y
    assert s["nodes"]["L0N0"]["carries"] == {"answer": 0.0, "x": 0.5, "y": 0.5}
    assert s["nodes"]["L1N0"]["carries"]["answer"] == 0.5
    assert s["nodes"]["L0N1"]["top_patterns"] == [["y = (# * #) mod ## = #.", 1.0]]
    assert s["nodes"]["L0N0"]["response_len_mean"] == 2.0


def test_a_programs_agents_are_summarised_without_a_sink(tmp_path, capsys):
    rows = [make_row(agent, "q", 0, step=1, call_index=i, response_ids=[5], text=text, question=Q, gold_answer="8")
            for agent, i, text in (("solver", 0, "The answer is 8."), ("verifier", 0, "yes"), ("solver", 1, "8"))]
    (tmp_path / "trajectories").mkdir()
    pq.write_table(concat([to_record_batch(rows)]), tmp_path / "trajectories" / "step_000001.parquet")
    s = summarize(load_rows(tmp_path))
    assert set(s["nodes"]) == {"solver", "verifier"} and s["sink_repeats_an_input"] is None
    assert main([str(tmp_path)]) == 0 and "sink repeated one of its inputs: -" in capsys.readouterr().out


def test_a_run_without_trajectories_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no step_*.parquet" in err
