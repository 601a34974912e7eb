"""Held-out evaluation of a graph's adapters on rollout workers: the full graph, then
the graph with each node's adapter zeroed (ablation), as Arrow trajectory tables.

The tables hold the same rows as training trajectories (one per node call, with each
node's text, the question and the gold answer), so everything the report says is
computed from data a user can open in pandas or DuckDB.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from neuromas_dist.adapters.peft_io import AdapterSet
from neuromas_dist.rollout.actors import broadcast_adapters, split_examples
from neuromas_dist.tasks.base import Example


class EvalPass(NamedTuple):
    greedy: pa.Table  # one greedy pass per question
    sampled: pa.Table | None  # ``samples`` passes per question at the training temperature


def ablated(adapters: AdapterSet, node: str, version: int) -> AdapterSet:
    """``adapters`` with ``node``'s LoRA B set to zero (its adapter then adds nothing: the
    node runs as the base model); every other node's tensors are the same objects."""
    if node not in adapters.tensors:
        raise KeyError(f"no adapter for node {node}; nodes: {', '.join(sorted(adapters.tensors))}")
    tensors = dict(adapters.tensors)
    if not any(".lora_B." in k for k in tensors[node]):
        raise KeyError(f"node {node}'s adapter has no lora_B tensors to zero")
    tensors[node] = {k: (v.new_zeros(v.shape) if ".lora_B." in k else v) for k, v in tensors[node].items()}
    return AdapterSet(version, tensors, adapters.peft_config)


def evaluate_pass(workers: Sequence[Any], examples: Sequence[Example], step: int, samples: int) -> EvalPass:
    """Greedy (and ``samples`` sampled) passes over ``examples``, shared across workers."""
    shares = [(w, s) for w, s in zip(workers, split_examples(examples, len(workers))) if s]
    results = ray.get([w.evaluate.remote(share, step, samples) for w, share in shares])
    greedy = pa.concat_tables([r["greedy"] for r in results if r["greedy"] is not None])
    sampled = [r["sampled"] for r in results if r.get("sampled") is not None]
    return EvalPass(greedy, pa.concat_tables(sampled) if sampled else None)


def ablation_passes(workers: Sequence[Any], examples: Sequence[Example], adapters: AdapterSet, step: int
                    ) -> dict[str, pa.Table]:
    """Greedy pass with each node ablated in turn; the workers end holding the last
    ablated set (callers that go on training must broadcast their adapters again)."""
    out = {}
    for i, node in enumerate(sorted(adapters.tensors)):
        broadcast_adapters(workers, ablated(adapters, node, adapters.version + 1 + i))
        out[node] = evaluate_pass(workers, examples, step, 0).greedy
    return out


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
