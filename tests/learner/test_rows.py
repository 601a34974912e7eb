"""Rows as the learner reads them: only its own questions, and a batch that breaks the
trajectory contract refused with one line naming the column."""

from __future__ import annotations

import pytest
from learner_helpers import make_batch

from neuromas_dist.learner.rows import rows_from_batch
from neuromas_dist.trajectories.schema import SchemaError
from neuromas_dist.trajectories.shards import owner_rank


def test_a_rank_keeps_only_its_own_questions():
    batch = make_batch(9, 2)
    for rank in range(3):
        rows = rows_from_batch(batch, rank, 3)
        assert rows and {owner_rank(r.question_id, 3) for r in rows} == {rank}
    assert len(rows_from_batch(batch, 0, 1)) == batch.num_rows


def test_a_batch_without_a_contract_column_is_one_line_naming_it():
    batch = make_batch(2, 2)
    broken = batch.drop_columns(["reward"])
    with pytest.raises(SchemaError, match=r"^trajectory batch: column 'reward' is missing$"):
        rows_from_batch(broken, 0, 1)
    retyped = batch.set_column(batch.schema.get_field_index("reward"), "reward",
                               batch.column("reward").cast("float64"))
    with pytest.raises(SchemaError, match=r"column 'reward' is double, the contract says float"):
        rows_from_batch(retyped, 0, 1)
