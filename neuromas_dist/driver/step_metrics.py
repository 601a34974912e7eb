"""Rollout metrics of one step, from its trajectory table (pure functions over Arrow)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from neuromas_dist.analysis.node_text import carry_fractions


def _mean(values: pa.ChunkedArray | pa.Array) -> float:
    return float(pc.mean(values).as_py()) if len(values) else float("nan")


def rollout_metrics(table: pa.Table, sink: str) -> dict[str, Any]:
    """Sample-level metrics (from the sink's rows: one per sample) and per-node lengths."""
    if table.num_rows == 0:
        return {"rollout/samples": 0}
    lengths = pc.list_value_length(table["response_ids"])
    sink_rows = table.filter(pc.equal(table["node"], sink))
    m: dict[str, Any] = {
        "rollout/samples": sink_rows.num_rows,
        "rollout/reward_mean": _mean(sink_rows["reward"]),
        "rollout/unparsable_frac": _mean(pc.is_null(sink_rows["parsed_answer"]).cast(pa.float64())),
        "rollout/response_tokens": int(pc.sum(lengths).as_py() or 0),
        "rollout/cut_frac": _mean(table["response_truncated"].cast(pa.float64())),
        "rollout/prompt_truncated_frac": _mean(table["prompt_truncated"].cast(pa.float64())),
        "rollout/adapter_version_min": int(pc.min(table["adapter_version"]).as_py()),
    }
    for node in sorted(set(table["node"].to_pylist())):
        m.update(node_metrics(table.filter(pc.equal(table["node"], node)), node))
    return m


def node_metrics(rows: pa.Table, node: str) -> dict[str, float]:
    """What distinguishes one node's calls within a step. The reward is shared by every
    node of a sample (and so is a loo advantage), so those cannot tell nodes apart;
    these can: length, the sampled tokens' surprisal, and what the texts carry."""
    lengths = pc.list_value_length(rows["response_ids"])
    logprobs = pc.list_flatten(rows["logprobs"])
    m = {f"node/{node}/response_len_mean": _mean(lengths),
         # E[-log p(sampled token)] is the policy's per-token entropy, estimated by its samples.
         f"node/{node}/entropy": -_mean(logprobs) if len(logprobs) else float("nan")}
    fractions = carry_fractions(rows.select(["text", "question", "gold_answer"]).to_pylist())
    for kind, f in fractions.items():
        m[f"node/{node}/carries_{kind}"] = f["carries"]
    return m
