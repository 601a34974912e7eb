"""Trajectories on disk: one Parquet file per step and learner rank,
``<root>/step_000012_r0.parquet``.

Each learner rank writes the rows it trains (the questions it owns), where they already
are: no process gathers a step's rows to write them. Batches arrive while a step's
rollouts stream in, so a step's file stays open and each batch is appended as a row
group; :meth:`TrajectoryWriter.close_step` finishes the file (Parquet's footer is
written on close). The file is written under a temporary name and renamed on close, so
a reader never sees a half-written step and a crashed run leaves no partial step file
behind. DuckDB reads a step as ``'trajectories/step_000012_*.parquet'``, pandas the whole
run as ``pd.read_parquet('trajectories/')``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from neuromas_dist.trajectories.schema import TRAJECTORY_SCHEMA, check_batch, concat

_STEP_FILE = re.compile(r"step_(\d+)_r(\d+)\.parquet")


def step_path(root: str | os.PathLike, step: int, rank: int = 0) -> Path:
    return Path(root) / f"step_{step:06d}_r{rank}.parquet"


def step_files(root: str | os.PathLike, step: int | None = None) -> list[Path]:
    """The finished step files under ``root`` (of one step, or all), in step and rank order."""
    found = [(tuple(map(int, m.groups())), p) for p in Path(root).glob("step_*.parquet")
             if (m := _STEP_FILE.fullmatch(p.name))]
    return [p for key, p in sorted(found) if step is None or key[0] == step]


def step_of(path: str | os.PathLike) -> int:
    m = _STEP_FILE.fullmatch(Path(path).name)
    if m is None:
        raise ValueError(f"{path}: not a step file (step_NNNNNN_rR.parquet)")
    return int(m.group(1))


def remove_after(root: str | os.PathLike, step: int) -> None:
    """Delete the files of steps after ``step`` (they will be redone) and any file a dead
    writer left half-written."""
    for path in step_files(root):
        if step_of(path) > step:
            path.unlink()
    for path in Path(root).glob(".step_*.partial"):
        path.unlink()


class TrajectoryWriter:
    """Appends record batches to per-step Parquet files under ``root`` (one rank's)."""

    def __init__(self, root: str | os.PathLike, rank: int = 0, compression: str = "zstd") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.rank, self.compression = rank, compression
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
        final = step_path(self.root, step, self.rank)
        os.replace(self._partial(step), final)
        return final

    def close(self) -> list[Path]:
        return [self.close_step(step) for step in sorted(self._open)]

    def discard(self) -> None:
        """Drop every step still being written (its step failed): no file is left."""
        for step, writer in list(self._open.items()):
            writer.close()
            self._partial(step).unlink(missing_ok=True)
        self._open.clear()

    def _partial(self, step: int) -> Path:
        return self.root / f".{step_path(self.root, step, self.rank).name}.partial"

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_step(root: str | os.PathLike, step: int) -> pa.Table:
    """One step's rows, every rank's file."""
    return _read(step_files(root, step))


def read_all(root: str | os.PathLike) -> pa.Table:
    """Every finished step under ``root``, in step order."""
    return _read(step_files(root))


def _read(files: list[Path]) -> pa.Table:
    return concat([b for f in files for b in pq.read_table(f, schema=TRAJECTORY_SCHEMA).to_batches()])
