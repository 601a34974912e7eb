"""Routing rows to the learner rank that owns their question."""

from __future__ import annotations

from neuromas_dist.trajectories.schema import make_row, to_record_batch
from neuromas_dist.trajectories.shards import owner_rank, split_by_owner


def make_batch(questions: int, samples: int):
    return to_record_batch([make_row(node, f"q{q}", k, step=1) for q in range(questions) for k in range(samples)
                            for node in ("L0N0", "L1N0")])


def test_each_rank_gets_exactly_its_questions_once():
    batch = make_batch(9, 2)
    pieces = split_by_owner(batch, 3)
    seen = []
    for rank, piece in enumerate(pieces):
        questions = set(piece.column("question_id").to_pylist())
        assert all(owner_rank(q, 3) == rank for q in questions)
        seen += piece.column("sample_id").to_pylist()
    assert sorted(seen) == sorted(batch.column("sample_id").to_pylist())
    assert sum(p.num_rows > 0 for p in pieces) >= 2  # the questions do spread over ranks
