"""The evaluation report from hand-made trajectory tables: accuracies, the paired gain,
ablation drops and what each node carries, against numbers worked out by hand."""

from __future__ import annotations

import json

import pytest

from neuromas_dist.analysis.evaluation import EvalPass, sink_scores
from neuromas_dist.analysis.plots import plot_report
from neuromas_dist.analysis.report import build_report, write_report
from neuromas_dist.trajectories.schema import concat, make_row, to_record_batch

QUESTIONS = {  # id -> (question, gold); x and y in the comments
    "q0": ("Let x = (1 + 2) mod 10 and y = (2 * 3) mod 10. What is (x + y) mod 10?", "9"),  # 3, 6
    "q1": ("Let x = (4 + 8) mod 10 and y = (8 * 7) mod 10. What is (x + y) mod 10?", "8"),  # 2, 6
    "q2": ("Let x = (5 + 5) mod 10 and y = (3 * 3) mod 10. What is (x + y) mod 10?", "9"),  # 0, 9
    "q3": ("Let x = (0 + 1) mod 10 and y = (2 * 2) mod 10. What is (x + y) mod 10?", "5"),  # 1, 4
}
IDS = list(QUESTIONS)


def _row(qid, k, node, text, reward):
    question, gold = QUESTIONS[qid]
    return make_row(node, qid, k, response_ids=[2, 3], logprobs=[-0.1, -0.2], reward=reward, text=text,
                    question=question, gold_answer=gold)


def _pass(sink_rewards, first_texts, samples=1):
    """One pass: per question, L0N0 writes first_texts[qid], the sink gets the reward."""
    rows = []
    for qid, rewards in zip(IDS, sink_rewards):
        for k in range(samples):
            r = rewards[k] if samples > 1 else rewards
            rows += [_row(qid, k, "L0N0", first_texts[qid], r),
                     _row(qid, k, "L1N0", f"The answer is {QUESTIONS[qid][1]}.", r)]
    return concat([to_record_batch(rows)])


X_TEXTS = {"q0": "x = (1 + 2) mod 10 = 3.", "q1": "x = (4 + 8) mod 10 = 2.", "q2": "y = (3 * 3) mod 10 = 9.",
           "q3": "x = (0 + 1) mod 10 = 7."}  # q3 states x with a wrong value


def test_report_numbers_worked_out_by_hand(tmp_path):
    full = EvalPass(_pass([1, 1, 1, 0], X_TEXTS), _pass([[1, 0], [1, 1], [0, 0], [1, 1]], X_TEXTS, samples=2))
    before = EvalPass(_pass([0, 1, 0, 0], X_TEXTS), _pass([[0, 0], [1, 0], [0, 0], [0, 1]], X_TEXTS, samples=2))
    ablation = {"L0N0": _pass([1, 0, 0, 0], X_TEXTS)}
    report = build_report(full, ablation, before, IDS, "L1N0", ["L0N0", "L1N0"], step=7)
    assert report["questions"] == 4 and report["samples_per_question"] == 2 and report["step"] == 7
    assert report["accuracy"]["greedy"]["mean"] == 0.75
    assert report["accuracy"]["sampled"]["mean"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)
    assert report["before"]["greedy"]["mean"] == 0.25
    gain = report["gain"]["greedy"]
    assert gain["mean"] == 0.5 and gain["ci_lo"] <= 0.5 <= gain["ci_hi"]  # per question: +1, 0, +1, 0
    assert report["gain"]["sampled"]["mean"] == pytest.approx((0.5 + 0.5 + 0 + 0.5) / 4)
    drop = report["ablation"]["L0N0"]["drop"]
    assert drop["mean"] == 0.5  # per question: 0, +1, +1, 0
    carried = report["node_text"]["L0N0"]["carries"]
    assert carried == {"answer": 0.0, "x": 0.5, "y": 0.25}  # q0, q1 carry x; q2 carries y; q3's x is wrong
    assert report["node_text"]["L0N0"]["states"]["x"] == 0.75
    assert report["node_text"]["L1N0"]["carries"]["answer"] == 1.0
    assert report["node_text"]["L0N0"]["top_patterns"][0] == ["x = (# + #) mod ## = #.", 0.75]
    paths = write_report(report, tmp_path, "test") + plot_report(report, tmp_path)
    assert all(p.is_file() for p in paths)
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))
    assert "0.750 [" in (tmp_path / "report.md").read_text()


def test_sink_scores_are_in_question_order_and_complain_about_gaps():
    table = _pass([1, 0, 1, 1], X_TEXTS)
    assert sink_scores(table, "L1N0", ["q3", "q0"]).tolist() == [[1.0], [1.0]]
    with pytest.raises(ValueError, match="no sink row"):
        sink_scores(table, "L1N0", ["q0", "nope"])
