"""Trajectories on disk: one Parquet file per step, ``<root>/step_000012.parquet``.

Batches arrive while a step's rollouts stream in, so a step's file stays open and
each batch is appended as a row group; :meth:`TrajectoryWriter.close_step` finishes
the file (Parquet's footer is written on close). The file is written under a
temporary name and renamed on close, so a reader (pandas, DuckDB) never sees a
half-written step, and a crashed run leaves no partial step file behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from neuromas_dist.trajectories.schema import TRAJECTORY_SCHEMA, check_batch, concat


def step_path(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"step_{step:06d}.parquet"


class TrajectoryWriter:
    """Appends record batches to per-step Parquet files under ``root``."""

    def __init__(self, root: str | os.PathLike, compression: str = "zstd") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.compression = compression
        self._open: dict[int, pq.ParquetWriter] = {}

    def write(self, step: int, batch: pa.RecordBatch | pa.Table) -> None:
        """Append ``batch`` (checked against the schema) to ``step``'s file."""
        check_batch(batch)
        writer = self._open.get(step)
        if writer is None:
            writer = pq.ParquetWriter(self._partial(step), TRAJECTORY_SCHEMA, compression=self.compression)
            self._open[step] = writer
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        writer.write_table(table)

    def close_step(self, step: int) -> Path:
        """Finish ``step``'s file; a step with no batches gets an empty file (0 rows)."""
        writer = self._open.pop(step, None)
        if writer is None:
            writer = pq.ParquetWriter(self._partial(step), TRAJECTORY_SCHEMA, compression=self.compression)
        writer.close()
        final = step_path(self.root, step)
        os.replace(self._partial(step), final)
        return final

    def close(self) -> list[Path]:
        return [self.close_step(step) for step in sorted(self._open)]

    def _partial(self, step: int) -> Path:
        return self.root / f".step_{step:06d}.parquet.partial"

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_step(root: str | os.PathLike, step: int, batches: Iterable[pa.RecordBatch]) -> Path:
    """All of one step's batches in one call."""
    writer = TrajectoryWriter(root)
    for batch in batches:
        writer.write(step, batch)
    return writer.close_step(step)


def read_step(root: str | os.PathLike, step: int) -> pa.Table:
    return pq.read_table(step_path(root, step), schema=TRAJECTORY_SCHEMA)


def read_all(root: str | os.PathLike) -> pa.Table:
    """Every finished step under ``root``, in step order."""
    files = sorted(Path(root).glob("step_*.parquet"))
    return concat([b for f in files for b in pq.read_table(f, schema=TRAJECTORY_SCHEMA).to_batches()])
