"""What the driver learns of a trajectory batch without reading its rows.

A rollout worker yields each batch as one piece per learner rank (``shards``) followed by
its :class:`BatchSummary`: the samples it holds (the driver's exactly-once bookkeeping)
with each one's reward and counted flags, the rows in each piece, and per-node sums. Sums,
not means, so the driver adds the summaries of a step's batches up (:class:`StepTally`) and turns them into the step's
rollout metrics; the rows themselves go from the worker's object store to the learner
ranks, each rank fetching only its piece.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from neuromas_dist.tasks.node_text import carry_counts

_CARRIES = "carries/"
_CODE = "code/"  # a code task's verdicts (its parsed answer is the sandbox's status)


SampleRecord = Mapping[str, float]  # one sample's counts: samples (1), reward, unparsable, code/<status>, flags


@dataclass(frozen=True)
class BatchSummary:
    sample_ids: tuple[str, ...]  # every finished sample of the batch, with rows or none (a sample never spans batches)
    piece_rows: tuple[int, ...]  # rows in each rank's piece, in rank order (0: nothing to send that rank)
    sums: Mapping[str, Mapping[str, float]]  # node -> sum name -> value (see node_sums)
    version_min: int | None  # oldest adapter version in the batch; None when it has no rows
    samples: Mapping[str, SampleRecord] = field(default_factory=dict)  # sample_id -> sample_record(...)


def sample_record(reward: float, parsed: str | None, flags: Mapping[str, float] = {},
                  answer_type: str = "number") -> dict[str, float]:
    """What a step's metrics count of one scored sample: its reward, whether its answer
    parsed, a code task's verdict and every flag its scoring and calls raised."""
    record = {"samples": 1.0, "reward": float(reward), "unparsable": float(parsed is None),
              **{key: float(n) for key, n in flags.items() if n}}
    if answer_type == "code" and parsed is not None:
        record[_CODE + parsed] = 1.0
    return record


def summarize(batch: pa.RecordBatch | pa.Table, pieces: Sequence[Any] | None = None,
              answer_type: str = "number", samples: Mapping[str, SampleRecord] | None = None) -> BatchSummary:
    """The summary of ``batch``; ``pieces``: its split by owner rank (default: one piece);
    ``answer_type``: the task's, so what a node's text carries is read as the task reads it;
    ``samples``: each sample's :func:`sample_record` as its rollout scored it (default: read
    from the rows, for rows read back from files: no flags then, and no sample without rows)."""
    pieces = [batch] if pieces is None else pieces
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    if samples is None:
        samples = _records_of_rows(table, answer_type)
    nodes = table.column("node")
    sums = {node: node_sums(table.filter(pc.equal(nodes, node)), answer_type)
            for node in dict.fromkeys(nodes.to_pylist())}
    version = pc.min(table.column("adapter_version")).as_py() if table.num_rows else None
    return BatchSummary(tuple(samples), tuple(p.num_rows for p in pieces), sums, version, dict(samples))


def _records_of_rows(table: pa.Table, answer_type: str) -> dict[str, SampleRecord]:
    """One record per sample of a row table, from its first row (every row of a sample has its reward)."""
    out: dict[str, SampleRecord] = {}
    for sid, reward, parsed in zip(*(table.column(c).to_pylist() for c in ("sample_id", "reward", "parsed_answer"))):
        if sid not in out:
            out[sid] = sample_record(reward, parsed, answer_type=answer_type)
    return out


def node_sums(rows: pa.Table, answer_type: str = "number") -> dict[str, float]:
    """One node's rows -> sums that add up across batches. The reward is shared by every
    node of a sample, so per-node lengths, surprisal and what the texts carry are what can
    tell nodes apart."""
    logprobs = pc.list_flatten(rows["logprobs"])
    n, carried, _ = carry_counts(rows.select(["text", "question", "gold_answer"]).to_pylist(), answer_type)
    return {"rows": float(n),
            "tokens": float(pc.sum(pc.list_value_length(rows["response_ids"])).as_py() or 0),
            "logprob_tokens": float(len(logprobs)),
            "logprob_sum": float(pc.sum(logprobs.cast(pa.float64())).as_py() or 0.0),
            "cut": float(pc.sum(rows["response_truncated"].cast(pa.int64())).as_py() or 0),
            "prompt_truncated": float(pc.sum(rows["prompt_truncated"].cast(pa.int64())).as_py() or 0),
            "reward": float(pc.sum(rows["reward"].cast(pa.float64())).as_py() or 0.0),
            "unparsable": float(pc.sum(pc.is_null(rows["parsed_answer"]).cast(pa.int64())).as_py() or 0),
            **{_CARRIES + kind: float(c) for kind, c in carried.items()},
            **(_verdicts(rows) if answer_type == "code" else {})}


def _verdicts(rows: pa.Table) -> dict[str, float]:
    counts = pc.value_counts(rows["parsed_answer"].drop_null()).to_pylist()
    return {_CODE + c["values"]: float(c["counts"]) for c in counts}


class StepTally:
    """The summaries of one step's batches, added up."""

    def __init__(self) -> None:
        self.sums: dict[str, Counter] = defaultdict(Counter)
        self.samples: Counter = Counter()
        self.version_min: int | None = None

    def add(self, summary: BatchSummary) -> None:
        for node, sums in summary.sums.items():
            self.sums[node].update(sums)
        for record in summary.samples.values():
            self.samples.update(record)
        if summary.version_min is not None:
            self.version_min = min(summary.version_min, self.version_min if self.version_min is not None
                                   else summary.version_min)

    def metrics(self) -> dict[str, Any]:
        """Sample-level metrics (one count per sample: its reward, verdict and flags) and per-node ones."""
        n = self.samples["samples"]
        if n == 0:
            return {"rollout/samples": 0}
        rows = sum(s["rows"] for s in self.sums.values())
        tokens = sum(s["tokens"] for s in self.sums.values())
        m: dict[str, Any] = {
            "rollout/samples": int(n),
            "rollout/reward_mean": _ratio(self.samples["reward"], n),
            "rollout/unparsable_frac": _ratio(self.samples["unparsable"], n),
            "rollout/response_tokens": int(tokens),
            "rollout/cut_frac": _ratio(sum(s["cut"] for s in self.sums.values()), rows),
            "rollout/prompt_truncated_frac": _ratio(sum(s["prompt_truncated"] for s in self.sums.values()), rows),
            "rollout/adapter_version_min": self.version_min,
            "rollout/calls_per_sample": rows / n,
        }
        for key in sorted(self.samples):
            if key.startswith(_CODE):  # passed, failed, timeout, memory, crashed
                m[f"rollout/code_{key.removeprefix(_CODE)}_frac"] = _ratio(self.samples[key], n)
            elif key.startswith("rollout/"):  # every flag a sample's scoring or calls counted, as a count
                m[key] = int(self.samples[key])
        for node in sorted(self.sums):
            m.update(_node_metrics(node, self.sums[node]))
        return m


def _node_metrics(node: str, s: Mapping[str, float]) -> dict[str, float]:
    m = {f"node/{node}/response_len_mean": _ratio(s["tokens"], s["rows"]),
         # E[-log p(sampled token)] is the policy's per-token entropy, estimated by its samples.
         f"node/{node}/entropy": -_ratio(s["logprob_sum"], s["logprob_tokens"])}
    for key in sorted(k for k in s if k.startswith(_CARRIES)):
        m[f"node/{node}/carries_{key.removeprefix(_CARRIES)}"] = _ratio(s[key], s["rows"])
    return m


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")
