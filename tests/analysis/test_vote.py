"""Majority vote over sampled answers (the compute-matched baseline), by hand."""

from __future__ import annotations

import pytest

from neuromas_dist.analysis.vote import majority_vote, vote_scores
from neuromas_dist.trajectories.schema import concat, make_row, to_record_batch


@pytest.mark.parametrize("parsed,rewards,expected", [
    (["3", "3", "5"], [1, 1, 0], 1.0),  # clear majority, right
    (["5", "3", "5"], [0, 1, 0], 0.0),  # clear majority, wrong
    (["5", "3", None, None, None], [0, 1, 0, 0, 0], 0.0),  # unparsable answers do not vote: tie 5-3, 5 first
    (["3", "5"], [1, 0], 1.0),  # tie: the answer seen first wins
    (["5", "3"], [0, 1], 0.0),
    ([None, None, None], [0, 0, 0], 0.0),  # no vote at all scores 0
    (["7", "2", "2", "7", "2"], [1, 0, 0, 1, 0], 0.0),
])
def test_majority_vote(parsed, rewards, expected):
    assert majority_vote(parsed, rewards) == expected


def _row(qid, k, parsed, reward, node="L0N0"):
    return make_row(node, qid, k, step=-1, logprobs=[-0.1], parsed_answer=parsed, reward=reward)


def test_vote_scores_use_the_first_k_samples_in_sample_order():
    # q0 samples in arrival order 2, 0, 1: by index the answers are 4, 4, 9 (gold 9)
    rows = [_row("q0", 2, "9", 1.0), _row("q0", 0, "4", 0.0), _row("q0", 1, "4", 0.0),
            _row("q1", 0, "1", 1.0), _row("q1", 1, "2", 0.0), _row("q1", 2, "2", 0.0),
            _row("q1", 0, "x", 0.0, node="L9N9")]  # another node's rows are ignored
    table = concat([to_record_batch(rows)])
    assert vote_scores(table, "L0N0", ["q1", "q0"], 1).tolist() == [1.0, 0.0]
    assert vote_scores(table, "L0N0", ["q1", "q0"], 3).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="needs 4"):
        vote_scores(table, "L0N0", ["q0"], 4)
