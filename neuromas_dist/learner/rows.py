"""Trajectory rows as the learner holds them and which rank owns them (``packing.py``
turns a pass's rows into tensors)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from neuromas_dist.trajectories.schema import check_batch
from neuromas_dist.trajectories.shards import owned_mask


@dataclass
class Row:
    node: str
    question_id: str
    sample_index: int
    prompt: list[int]
    response: list[int]
    logprobs: list[float]
    version: int
    reward: float
    first: bool = True  # the first row of its (sample, node): counts the sample once in a node's mean reward
    adv_known: float = 0.0  # (R - b) * scale for the part of the baseline known while streaming
    scale: float = 1.0  # 1, or 1 / std of the question's sample rewards (advantage_norm=std)
    old: torch.Tensor | None = None  # ppo_clip: logprobs under the step's starting adapters
    ref: torch.Tensor | None = None  # kl_coef > 0 under ppo_clip: logprobs under the base model


def own_batch(batch: Any, rank: int, world_size: int) -> Any:
    """The rows of a trajectory RecordBatch/Table that belong to this rank (whole
    questions; the rollout worker routed them already, this only guards). The batch is
    checked against the contract first: a malformed one is one SchemaError naming the column."""
    check_batch(batch)
    return batch if world_size == 1 else batch.filter(owned_mask(batch, rank, world_size))


def rows_of(batch: Any) -> list[Row]:
    """A checked trajectory batch as the learner's rows (a batch holds whole samples, so
    the first row of each (sample, node) in it is that sample's first call of that node)."""
    cols = {name: batch.column(name).to_pylist() for name in
            ("node", "question_id", "sample_index", "prompt_ids", "response_ids", "logprobs",
             "adapter_version", "reward")}
    seen: set[tuple[str, int, str]] = set()
    rows = []
    for i, qid in enumerate(cols["question_id"]):
        key = (qid, cols["sample_index"][i], cols["node"][i])
        rows.append(Row(cols["node"][i], qid, cols["sample_index"][i], cols["prompt_ids"][i], cols["response_ids"][i],
                        cols["logprobs"][i], cols["adapter_version"][i], float(cols["reward"][i]), key not in seen))
        seen.add(key)
    return rows


def rows_from_batch(batch: Any, rank: int, world_size: int) -> list[Row]:
    return rows_of(own_batch(batch, rank, world_size))


def recorded_logprobs(rows: Sequence[Row], like: torch.Tensor) -> torch.Tensor:
    """The rollout's logprobs of the rows' tokens, padded to ``like`` ([B, T])."""
    return padded([r.logprobs for r in rows], like)


def padded(values: Sequence[Sequence[float] | torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Per-row token values, zero-padded to ``like`` ([B, T]; its dtype and device)."""
    out = torch.zeros_like(like)
    for i, v in enumerate(values):
        out[i, :len(v)] = torch.as_tensor(v, dtype=torch.float32)
    return out


def stored(values: Sequence[torch.Tensor | None], what: str) -> list[torch.Tensor]:
    """Per-row tensors the step's first pass stored (``Row.old``, ``Row.ref``); a row
    without one is a bug, named here rather than as a ``len(None)`` inside :func:`padded`."""
    out = [v for v in values if v is not None]
    if len(out) != len(values):
        raise RuntimeError(f"{len(values) - len(out)} of {len(values)} rows have no {what} logprobs")
    return out


def by_node(rows: Sequence[Row]) -> list[tuple[str, list[Row]]]:
    """(node, its rows) in order of first appearance."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r.node].append(r)
    return list(groups.items())
