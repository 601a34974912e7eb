"""``python -m neuromas_dist.analysis.texts RUN_DIR [--tokenizer DIR]``: what each node
wrote during training, from a run's trajectories.

Per node: how long its texts are, their most frequent shapes, what they carry (on the
synthetic tasks), and per sample how often two nodes wrote the very same text or the
sink repeated an input. Run directories from before the trajectories held each node's
text are decoded with ``--tokenizer`` (the run's model directory).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from transformers import AutoTokenizer

from neuromas_dist.graph.topology import is_node_name, parse_node_name
from neuromas_dist.tasks.node_text import summarize_node


def load_rows(run_dir: Path, tokenizer: Any = None) -> list[dict[str, Any]]:
    """Every trajectory row of the run, with ``text`` decoded when the file lacks it."""
    rows = []
    for path in sorted((run_dir / "trajectories").glob("step_*.parquet")):
        table = pq.read_table(path)
        if "text" not in table.column_names and tokenizer is None:
            raise ValueError(f"{path} has no text column (an older run): pass --tokenizer MODEL_DIR")
        for row in table.to_pylist():
            if "text" not in row:
                row["text"] = tokenizer.decode(row["response_ids"], skip_special_tokens=True)
            rows.append(row)
    if not rows:
        raise ValueError(f"{run_dir}/trajectories: no step_*.parquet files")
    return rows


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    by_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    samples: dict[tuple[int, str], dict[str, str]] = defaultdict(dict)
    for row in rows:
        by_node[row["node"]].append(row)
        samples[(row["step"], row["sample_id"])][row["node"]] = row["text"].strip()
    nodes = sorted(by_node)
    out: dict[str, Any] = {"samples": len(samples), "nodes": {}}
    for node in nodes:
        out["nodes"][node] = summarize_node(by_node[node], 3)
    if not all(is_node_name(n) for n in nodes):  # a program's agents: no sink, no inputs to repeat
        out["same_text_all_non_sink"] = out["sink_repeats_an_input"] = None
        return out
    sink = max(nodes, key=parse_node_name)  # the one node of the last layer
    others = [n for n in nodes if n != sink]
    out["same_text_all_non_sink"] = (_share(samples, lambda s: len({s.get(n) for n in others}) == 1)
                                     if len(others) > 1 else None)
    out["sink_repeats_an_input"] = _share(samples, lambda s: s.get(sink) in {s.get(n) for n in others})
    return out


def _share(samples: dict, pred) -> float:
    return sum(bool(pred(s)) for s in samples.values()) / max(1, len(samples))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neuromas_dist.analysis.texts", description=__doc__.split("\n\n")[1])
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--tokenizer", help="model directory whose tokenizer decodes runs without a text column")
    args = p.parse_args(argv)
    try:
        tokenizer = None
        if args.tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        summary = summarize(load_rows(Path(args.run_dir), tokenizer))
    except (ValueError, OSError) as exc:
        print(f"texts: {exc}", file=sys.stderr)
        return 2
    same, repeats = summary["same_text_all_non_sink"], summary["sink_repeats_an_input"]
    print(f"{summary['samples']} samples; all non-sink nodes wrote the same text: "
          f"{'-' if same is None else f'{same:.3f}'}; "
          f"sink repeated one of its inputs: {'-' if repeats is None else f'{repeats:.3f}'}")
    for node, e in summary["nodes"].items():
        shapes = "; ".join(f"{s!r} {f:.1%}" for s, f in e["top_patterns"])
        carried = ", ".join(f"{k} {v:.2f}" for k, v in e.get("carries", {}).items())
        print(f"  {node}: {e['response_len_mean']:.1f} tokens; {shapes}" + (f"; carries {carried}" if carried else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
