"""Parquet round trip of trajectory batches: per-step files that pandas reads back."""

from __future__ import annotations

import pandas as pd
import pytest

from neuromas_dist.trajectories.parquet import (
    TrajectoryWriter,
    read_all,
    read_step,
    remove_after,
    step_files,
    step_path,
)
from neuromas_dist.trajectories.schema import SchemaError, TrajectoryRow, make_row, to_record_batch


def _row(step: int, sample: int, node: str = "L1N0") -> TrajectoryRow:
    return make_row(node, f"q{sample}", 0, step=step, prompt_ids=[1, 2, 3], response_ids=[4, 5], logprobs=[-0.5, -1.25],
                    adapter_version=3, answer_text="The answer is 4.", parsed_answer="4", reward=1.0, latency_s=0.01)


def test_batches_append_to_one_step_file_and_pandas_reads_it(tmp_path):
    with TrajectoryWriter(tmp_path) as writer:
        writer.write(12, to_record_batch([_row(12, 0), _row(12, 1)]))
        writer.write(12, to_record_batch([_row(12, 2)]))
        writer.write(13, to_record_batch([_row(13, 0)]))
        assert not step_path(tmp_path, 12).exists(), "a step file must not appear before it is complete"
    frame = pd.read_parquet(step_path(tmp_path, 12))
    assert list(frame["sample_id"]) == ["q0#0", "q1#0", "q2#0"]
    assert list(frame.loc[0, "logprobs"]) == [-0.5, -1.25]
    assert read_step(tmp_path, 13).num_rows == 1
    assert read_all(tmp_path).column("step").to_pylist() == [12, 12, 12, 13]
    assert step_path(tmp_path, 12).name == "step_000012_r0.parquet"


def test_each_rank_writes_its_own_file_and_a_step_reads_them_all(tmp_path):
    """Ranks write the rows they train side by side; a step is every rank's file, and
    going back to a checkpoint removes later steps and what a dead writer left."""
    for rank, samples in ((0, [0, 2]), (1, [1])):
        with TrajectoryWriter(tmp_path, rank) as writer:
            for step in (3, 4):
                writer.write(step, to_record_batch([_row(step, k) for k in samples]))
    dead = TrajectoryWriter(tmp_path, 2)
    dead.write(4, to_record_batch([_row(4, 5)]))  # never closed: a rank that died mid-step
    assert [p.name for p in step_files(tmp_path)] == ["step_000003_r0.parquet", "step_000003_r1.parquet",
                                                      "step_000004_r0.parquet", "step_000004_r1.parquet"]
    assert sorted(read_step(tmp_path, 4).column("sample_id").to_pylist()) == ["q0#0", "q1#0", "q2#0"]
    remove_after(tmp_path, 3)
    assert [p.name for p in step_files(tmp_path)] == ["step_000003_r0.parquet", "step_000003_r1.parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000003_r0.parquet", "step_000003_r1.parquet"]
    assert len(pd.read_parquet(tmp_path)) == 3, "pandas reads the directory as one table"


def test_round_trip_keeps_every_field(tmp_path):
    rows = [_row(5, i, node) for i in range(3) for node in ("L0N0", "L1N0")]
    with TrajectoryWriter(tmp_path) as writer:
        writer.write(5, to_record_batch(rows))
    back = read_step(tmp_path, 5).to_pylist()
    for row, got in zip(rows, back):
        assert TrajectoryRow(**got) == row._replace(prompt_ids=list(row.prompt_ids))


def test_empty_step_gives_an_empty_file_and_bad_batch_is_rejected(tmp_path):
    writer = TrajectoryWriter(tmp_path)
    path = writer.close_step(7)
    assert pd.read_parquet(path).empty
    bad = to_record_batch([_row(1, 0)]).select(["step", "node"])
    with pytest.raises(SchemaError):
        writer.write(1, bad)
