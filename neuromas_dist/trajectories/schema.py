"""The trajectory contract between rollout and learner: one Arrow schema, defined here only.

One row is one agent call for one sample: a sample is one pass of one question through
the whole graph (or one run of an agent program), so a sample of a 3-node graph gives 3
rows that share ``sample_id`` and ``reward``, and a program whose solver is called twice
gives two solver rows, ``call_index`` 0 and 1. Rollout workers emit these rows as
``pyarrow.RecordBatch`` objects; the learner reads them back column-wise (learner.rows). Parquet files under a run's
``trajectories/`` hold exactly this schema, so pandas and DuckDB read them directly.
"""

from __future__ import annotations

from typing import Any, Iterable, NamedTuple, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from neuromas_dist.graph.topology import is_node_name, parse_node_name


class TrajectoryRow(NamedTuple):
    """One agent call of one sample. Shapes: P = prompt tokens, T = response tokens."""

    step: int  # training step these rollouts were sampled for
    sample_id: str  # "<question_id>#<sample_index>", unique within a step
    question_id: str  # id of the question in its data set
    sample_index: int  # k in 0..n_samples-1 for this question
    node: str  # the agent: a graph node's name ("L0N1") or a program's agent ("solver"); its adapter
    layer: int  # 0-based layer of the node (a program's agents: 0)
    node_index: int  # 0-based position of the node within its layer (a program's agents: in program.agents)
    call_index: int  # 0-based number of this agent's call within the sample (a graph node: always 0)
    prompt_ids: Sequence[int]  # [P] token ids fed to the model (chat template applied)
    response_ids: Sequence[int]  # [T] sampled token ids
    logprobs: Sequence[float]  # [T] log-prob of each sampled token under the sampling policy
    finish_reason: str  # vLLM finish reason: "stop", "length" or "abort"
    prompt_truncated: bool  # an upstream message was cut to fit the token budget
    response_truncated: bool  # generation hit max_new_tokens (finish_reason == "length")
    adapter_version: int  # version of the node's LoRA adapter that sampled this row
    answer_text: str  # the scored answer: the sink's text or the program's return (same on every row of a sample)
    parsed_answer: str | None  # answer extracted from answer_text; None if unparsable
    reward: float  # terminal reward of the sample, identical on all its rows
    worker_id: int  # rollout worker that produced the row
    latency_s: float  # seconds from this node's submission to its last token
    # Readable without the tokenizer (DuckDB/pandas): what this node wrote and what it was asked.
    text: str = ""  # this node's own decoded response
    question: str = ""  # the question text of the sample
    gold_answer: str = ""  # the question's normalised gold answer


TRAJECTORY_SCHEMA = pa.schema(
    [
        pa.field("step", pa.int64(), nullable=False),
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("question_id", pa.string(), nullable=False),
        pa.field("sample_index", pa.int32(), nullable=False),
        pa.field("node", pa.string(), nullable=False),
        pa.field("layer", pa.int32(), nullable=False),
        pa.field("node_index", pa.int32(), nullable=False),
        pa.field("call_index", pa.int32(), nullable=False),
        pa.field("prompt_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("response_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("logprobs", pa.list_(pa.float32()), nullable=False),
        pa.field("finish_reason", pa.string(), nullable=False),
        pa.field("prompt_truncated", pa.bool_(), nullable=False),
        pa.field("response_truncated", pa.bool_(), nullable=False),
        pa.field("adapter_version", pa.int64(), nullable=False),
        pa.field("answer_text", pa.string(), nullable=False),
        pa.field("parsed_answer", pa.string(), nullable=True),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("worker_id", pa.int32(), nullable=False),
        pa.field("latency_s", pa.float64(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),
        pa.field("gold_answer", pa.string(), nullable=False),
    ]
)

assert tuple(TRAJECTORY_SCHEMA.names) == TrajectoryRow._fields, "schema and row type drifted"


def make_row(node: str, question_id: str = "q0", sample_index: int = 0, *, response_ids: Sequence[int] = (2,),
             logprobs: Sequence[float] | None = None, **fields) -> TrajectoryRow:
    """A row by keyword, everything derivable derived: ``sample_id``, ``layer`` and
    ``node_index`` (from a graph node's name; 0 for a program's agent), ``logprobs`` (-1 per
    response token) and ``response_truncated`` (from ``finish_reason``); the rest defaults to
    an on-policy, unrewarded first call. For tests and benchmarks, which build rows without a rollout."""
    layer, index = parse_node_name(node) if is_node_name(node) else (0, 0)
    base: dict[str, Any] = dict(step=0, call_index=0, prompt_ids=[1], finish_reason="stop", prompt_truncated=False,
                                adapter_version=0, answer_text="", parsed_answer=None, reward=0.0, worker_id=0,
                                latency_s=0.0)
    base.update(fields)
    base.setdefault("response_truncated", base["finish_reason"] == "length")
    return TrajectoryRow(sample_id=f"{question_id}#{sample_index}", question_id=question_id, sample_index=sample_index,
                         node=node, layer=layer, node_index=index, response_ids=list(response_ids),
                         logprobs=[-1.0] * len(response_ids) if logprobs is None else list(logprobs), **base)


class SchemaError(ValueError):
    """A record batch that does not follow TRAJECTORY_SCHEMA."""


def to_record_batch(rows: Iterable[TrajectoryRow]) -> pa.RecordBatch:
    """Rows -> one RecordBatch with the contract schema; raises SchemaError on bad rows."""
    rows = list(rows)
    columns = {name: [getattr(r, name) for r in rows] for name in TrajectoryRow._fields}
    try:
        batch = pa.RecordBatch.from_pydict(columns, schema=TRAJECTORY_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SchemaError(f"trajectory rows do not fit the schema: {exc}") from exc
    check_batch(batch)
    return batch


def check_batch(batch: pa.RecordBatch | pa.Table) -> None:
    """Raise SchemaError unless ``batch`` has the contract schema and per-row lengths agree."""
    if not batch.schema.equals(TRAJECTORY_SCHEMA, check_metadata=False):
        raise SchemaError(f"trajectory batch: {_first_difference(batch.schema)}")
    resp = batch.column("response_ids")
    lps = batch.column("logprobs")
    resp_len = pc.list_value_length(resp).to_pylist()
    lp_len = pc.list_value_length(lps).to_pylist()
    for i, (a, b) in enumerate(zip(resp_len, lp_len)):
        if a != b:
            raise SchemaError(f"row {i}: {a} response tokens but {b} logprobs")


def _first_difference(schema: pa.Schema) -> str:
    """The first column that breaks the contract, in one phrase."""
    for want in TRAJECTORY_SCHEMA:
        if want.name not in schema.names:
            return f"column {want.name!r} is missing"
        got = schema.field(want.name)
        if not got.type.equals(want.type):
            return f"column {want.name!r} is {got.type}, the contract says {want.type}"
        if got.nullable and not want.nullable:
            return f"column {want.name!r} is nullable, the contract says not null"
    extra = [n for n in schema.names if n not in TRAJECTORY_SCHEMA.names]
    return f"unexpected column {extra[0]!r}" if extra else "columns out of the contract's order"


def concat(batches: Sequence[pa.RecordBatch]) -> pa.Table:
    """Several batches -> one Table with the contract schema (empty Table if none)."""
    if not batches:
        return TRAJECTORY_SCHEMA.empty_table()
    return pa.Table.from_batches(list(batches), schema=TRAJECTORY_SCHEMA)
