"""How much of a padded learner pass is padding: on a run's real trajectories and on a
GSM8K-like length distribution, for passes of a fixed row count in arrival order (the
learner before token budgets) and for token-budget passes, longest rows first.

    python -m benchmarks.pad_fraction [RUN_DIR ...] [--micro-batch 32] [--budget 16384]

Per step and node (per-node passes), all of the step's rows taken as one queue: the
learner streams and cuts passes from what has arrived, so its token-budget passes sort
within smaller queues than this and pad a little more. Packed passes (``padding_free``)
pad nothing. Writes benchmarks/results/pad_fraction.json.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

from benchmarks.learner_throughput import row_lengths
from neuromas_dist.learner.packing import pad_fraction, row_tokens, take_pass
from neuromas_dist.trajectories.parquet import read_all

REPO = Path(__file__).resolve().parents[1]


def passes_in_order(rows: list, max_rows: int) -> list[list[int]]:
    return [[row_tokens(r) for r in rows[i:i + max_rows]] for i in range(0, len(rows), max_rows)]


def passes_by_budget(rows: list, max_rows: int, budget: int) -> list[list[int]]:
    out, queue = [], list(rows)
    while queue:
        taken, queue = take_pass(queue, max_rows, budget, packed=False)
        out.append([row_tokens(r) for r in taken])
    return out


def fractions(groups: list[list], max_rows: int, budget: int) -> dict[str, float]:
    """Pad fraction over all groups (one group = one step's rows of one node)."""
    fixed = [p for g in groups for p in passes_in_order(g, max_rows)]
    sized = [p for g in groups for p in passes_by_budget(g, max_rows, budget)]
    lengths = [row_tokens(r) for g in groups for r in g]
    return {"rows": len(lengths), "mean_tokens": round(sum(lengths) / max(len(lengths), 1), 1),
            "fixed_rows_in_order": round(pad_fraction(lengths, fixed), 3),
            "token_budget_longest_first": round(pad_fraction(lengths, sized), 3), "packed": 0.0}


def run_groups(run_dir: Path) -> list[list]:
    table = read_all(run_dir / "trajectories")
    groups: dict[tuple[int, str], list] = defaultdict(list)
    for step, node, p, r in zip(*(table.column(c).to_pylist() for c in ("step", "node", "prompt_ids", "response_ids"))):
        groups[(step, node)].append(SimpleNamespace(prompt=p, response=r))
    return list(groups.values())


def gsm8k_like_groups(steps: int = 4, nodes: int = 3, rows: int = 64 * 8, seed: int = 0) -> list[list]:
    rng = random.Random(seed)
    return [[SimpleNamespace(prompt=[0] * p, response=[0] * r)
             for p, r in (row_lengths("gsm8k-like", rng, 0, 0) for _ in range(rows))] for _ in range(steps * nodes)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", help="run directories (their trajectories/)")
    ap.add_argument("--micro-batch", type=int, default=32, help="rows per pass (learner.micro_batch_size)")
    ap.add_argument("--budget", type=int, default=16384, help="learner.max_tokens_per_micro_batch")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pad_fraction.json"))
    args = ap.parse_args()
    result = {"settings": {"micro_batch": args.micro_batch, "budget": args.budget},
              "gsm8k_like": fractions(gsm8k_like_groups(), args.micro_batch, args.budget)}
    for run in args.runs:
        result[str(run)] = fractions(run_groups(Path(run)), args.micro_batch, args.budget)
    for name, v in result.items():
        if name != "settings":
            print(f"{name}: {v}")
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
