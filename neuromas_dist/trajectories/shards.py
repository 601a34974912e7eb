"""Which learner rank trains which rows, decided once where the rows are made.

A question's samples (and so every row of each sample) belong to one rank, so leave-one-out
baselines stay local to it. The rollout worker splits each batch with :func:`split_by_owner`
and hands the driver one piece per rank; a rank only ever receives its own questions.
"""

from __future__ import annotations

import zlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def owner_rank(question_id: str, world_size: int) -> int:
    """The rank that trains a question: all its samples, so leave-one-out stays local."""
    return zlib.crc32(question_id.encode()) % world_size


def _owners(batch: Any, world_size: int) -> Any:
    return pa.array([owner_rank(q, world_size) for q in batch.column("question_id").to_pylist()], type=pa.int64())


def owned_mask(batch: Any, rank: int, world_size: int) -> Any:
    """Boolean Arrow array: the rows of ``batch`` whose question ``rank`` owns."""
    return pc.equal(_owners(batch, world_size), rank)


def split_by_owner(batch: Any, world_size: int) -> list[Any]:
    """One piece of a trajectory batch per rank: the rows of the questions it owns."""
    if world_size == 1:
        return [batch]
    owners = _owners(batch, world_size)
    return [batch.filter(pc.equal(owners, r)) for r in range(world_size)]
