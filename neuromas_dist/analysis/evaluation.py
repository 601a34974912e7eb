"""Held-out passes as Arrow trajectory tables (the full graph, then each node ablated; run by
``driver/evaluation.py``) and the per-question sink scores read from them. Files only.

The tables hold the same rows as training trajectories (one per node call, with each
node's text, the question and the gold answer), so everything the report says is
computed from data a user can open in pandas or DuckDB.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


class EvalPass(NamedTuple):
    greedy: pa.Table  # one greedy pass per question
    sampled: pa.Table | None  # ``samples`` passes per question at the training temperature


def sink_samples(table: pa.Table, sink: str, question_ids: Sequence[str], columns: Sequence[str]
                 ) -> list[list[tuple]]:
    """Per question (in ``question_ids`` order), its sink rows' ``columns`` sorted by sample
    index. ``sink`` empty (a program): each sample's first row, which carries its reward and answer."""
    if sink:
        table = table.filter(pc.equal(table["node"], sink))
    else:
        first = pa.array(_first_of_each(table["sample_id"].to_pylist()))
        table = table.filter(first)
    rows = table.select(["question_id", "sample_index", *columns])
    by_question: dict[str, list[tuple]] = {}
    for qid, k, *values in zip(*(rows[c].to_pylist() for c in rows.column_names)):
        by_question.setdefault(qid, []).append((k, *values))
    missing = [q for q in question_ids if q not in by_question]
    if missing:
        raise ValueError(f"{len(missing)} questions have no sink row (a program: no call), e.g. {missing[0]}")
    return [[r[1:] for r in sorted(by_question[q], key=lambda r: r[0])] for q in question_ids]


def _first_of_each(ids: Sequence[str]) -> list[bool]:
    first: dict[str, int] = {}  # each id's first index
    return [first.setdefault(i, j) == j for j, i in enumerate(ids)]


def sink_scores(table: pa.Table, sink: str, question_ids: Sequence[str]) -> np.ndarray:
    """Sink rewards as [Q, S] in ``question_ids`` order (S = passes per question)."""
    per_question = sink_samples(table, sink, question_ids, ["reward"])
    return np.array([[r for (r,) in samples] for samples in per_question], dtype=np.float64)


def save_table(table: pa.Table | None, path: Path) -> None:
    if table is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)


def load_table(path: Path) -> pa.Table | None:
    return pq.read_table(path) if path.is_file() else None
