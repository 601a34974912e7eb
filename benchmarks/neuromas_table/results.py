"""The table from the finished runs: every row's per-question scores, pooled over seeds.

Each row of the table is read from a held-out pass a training run saved (its step-0
pass, a pass during training, its final pass), scored greedily or by majority vote
over sampled passes. All rows use the same questions, so any two rows compare paired.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import pyarrow.compute as pc

from benchmarks.neuromas_table.arms import Matched, TableSpec, nodes, run_dir
from benchmarks.neuromas_table.runner import wall_seconds
from neuromas_dist.analysis.evaluation import sink_scores
from neuromas_dist.analysis.run_eval import BEFORE, FINAL, load_pass, step_pass_name
from neuromas_dist.analysis.stats import bootstrap_ci, paired_seeds_diff_ci, seeds_ci
from neuromas_dist.analysis.vote import vote_scores
from neuromas_dist.graph.topology import parse_node_name


class Row(NamedTuple):
    key: str
    label: str
    run: str  # the arm whose run directory holds the pass
    pass_name: str  # before / final / step_N
    vote: int  # 0: the greedy pass; k: majority vote over the first k sampled passes
    widths: tuple[int, ...]  # the graph (for LLM calls and LoRA parameters)
    steps: int  # training steps behind the row, all stages included
    small_steps: int = 0  # of which on the small graph before growth


def rows(spec: TableSpec) -> list[Row]:
    C, D, S, L, M = spec.small_steps, spec.large_steps, spec.small_widths, spec.large_widths, spec.mid_widths
    k3, k7 = spec.vote_calls
    out = [
        Row("base", "base model, 1 call (greedy)", "single", BEFORE, 0, (1,), 0),
        Row("base_vote3", f"base model, majority of {k3} samples", "single", BEFORE, k3, (1,), 0),
        Row("base_vote7", f"base model, majority of {k7} samples", "single", BEFORE, k7, (1,), 0),
        Row("single", "single-LLM RL, matched LoRA parameters", "single", FINAL, 0, (1,), C),
        Row("single_vote3", f"single-LLM RL, majority of {k3} samples", "single", FINAL, k3, (1,), C),
        Row("single_vote7", f"single-LLM RL, majority of {k7} samples", "single", FINAL, k7, (1,), C),
        Row("neuromas3_untrained", "NeuroMAS-3, untrained", "neuromas3", BEFORE, 0, S, 0),
        Row("neuromas3", "NeuroMAS-3", "neuromas3", FINAL, 0, S, C),
        Row("neuromas7_untrained", "NeuroMAS-7, untrained", "neuromas7_scratch", BEFORE, 0, L, 0),
        Row("neuromas7_scratch", "NeuroMAS-7 from scratch", "neuromas7_scratch", FINAL, 0, L, D),
    ]
    for mode in spec.growth_modes:
        run = f"neuromas7_grown_{mode}"
        out += [Row(f"grown_{mode}_start", f"NeuroMAS-7 grown ({mode}), at growth", run, BEFORE, 0, L, C, C),
                Row(f"grown_{mode}_equal", f"NeuroMAS-7 grown ({mode}), equal total steps", run,
                    step_pass_name(spec.equal_total_step), 0, L, D, C),
                Row(f"grown_{mode}", f"NeuroMAS-7 grown ({mode})", run, FINAL, 0, L, C + D, C)]
    out += [Row("neuromas5_grown", "NeuroMAS-5 grown (3 -> 5)", "neuromas5_grown", FINAL, 0, M, C + D, C),
            Row("grown_via5", "NeuroMAS-7 grown 3 -> 5 -> 7", "neuromas7_grown_via5", FINAL, 0, L, C + 2 * D, C + D)]
    return out


def comparisons(spec: TableSpec) -> list[tuple[str, str, str]]:
    """(row a, row b, what a - b tests)."""
    out = [("neuromas3", "single", "claim 1: NeuroMAS-3 vs single-LLM RL, same LoRA parameters and steps"),
           ("neuromas3", "neuromas3_untrained", "NeuroMAS-3 training gain"),
           ("neuromas7_scratch", "neuromas7_untrained", "NeuroMAS-7 from scratch training gain"),
           ("neuromas3", "base_vote3", "claim 3: NeuroMAS-3 vs base model, majority of 3 (same calls)"),
           ("neuromas3", "single_vote3", "claim 3: NeuroMAS-3 vs trained single LLM, majority of 3 (same calls)"),
           ("neuromas7_scratch", "base_vote7", "claim 3: NeuroMAS-7 scratch vs base model, majority of 7"),
           ("single_vote3", "single", "does voting help the trained single LLM")]
    for mode in spec.growth_modes:
        out += [(f"grown_{mode}", "neuromas7_scratch",
                 f"claim 2: grown ({mode}) vs scratch, grown trained C more steps in all"),
                (f"grown_{mode}_equal", "neuromas7_scratch",
                 f"claim 2: grown ({mode}) vs scratch at equal total steps"),
                (f"grown_{mode}_start", "neuromas3",
                 f"growth ({mode}): the grown graph at step 0 vs the graph it grew from"),
                (f"grown_{mode}", "single_vote7", f"claim 3: grown ({mode}) vs trained single LLM, majority of 7")]
    if {"gated", "carry"} <= set(spec.growth_modes):
        out.append(("grown_gated", "grown_carry", "growth mode: gated vs carry, same steps"))
    out += [("neuromas5_grown", "neuromas3", "NeuroMAS-5 grown vs the NeuroMAS-3 it grew from"),
            ("grown_via5", "neuromas7_scratch", "claim 2: grown 3 -> 5 -> 7 vs scratch")]
    if "gated" in spec.growth_modes:
        out.append(("grown_via5", "grown_gated", "growth path: 3 -> 5 -> 7 vs 3 -> 7 (the first trained D more steps)"))
    return out


def _sink(names: Sequence[str]) -> str:
    return max(names, key=parse_node_name)


class Scores(NamedTuple):
    scores: np.ndarray  # [Q]
    question_ids: list[str]  # sorted
    calls: float  # LLM calls per question the pass made (a gated graph at growth runs only its carried nodes)


def row_scores(root: Path, row: Row, seed: int, question_ids: Sequence[str] | None,
               load: Callable[[Path, str], Any] = load_pass) -> Scores:
    """One row's per-question scores for one seed, counted from its saved pass."""
    directory = run_dir(root, row.run, seed)
    loaded = load(directory, row.pass_name)
    if loaded is None:
        raise FileNotFoundError(f"{directory}: no held-out pass '{row.pass_name}' (did the run finish?)")
    passes, names = loaded
    qids = list(question_ids) if question_ids is not None else sorted(set(passes.greedy["question_id"].to_pylist()))
    if row.vote:
        if passes.sampled is None:
            raise FileNotFoundError(f"{directory}: pass '{row.pass_name}' has no sampled passes to vote over")
        used = passes.sampled.filter(pc.less(passes.sampled["sample_index"], row.vote))
        return Scores(vote_scores(passes.sampled, _sink(names), qids, row.vote), qids, used.num_rows / len(qids))
    return Scores(sink_scores(passes.greedy, _sink(names), qids)[:, 0], qids, passes.greedy.num_rows / len(qids))


def collect(root: Path, spec: TableSpec, matched: Matched) -> dict[str, Any]:
    """Every row's accuracy (pooled and per seed) and every comparison, as one dict."""
    qids: list[str] | None = None
    scores: dict[str, np.ndarray] = {}
    table: dict[str, Any] = {}
    load = functools.cache(load_pass)  # greedy rows and their votes read the same passes
    for row in rows(spec):
        per_seed = []
        for seed in spec.seeds:
            got = row_scores(root, row, seed, qids, load)
            qids = got.question_ids
            per_seed.append(got)
        scores[row.key] = np.stack([p.scores for p in per_seed])
        calls = float(np.mean([p.calls for p in per_seed]))
        table[row.key] = _row_entry(root, row, spec, matched, scores[row.key], calls)
    diffs = [{"a": a, "b": b, "tests": what, "diff": paired_seeds_diff_ci(scores[a], scores[b]).as_dict()}
             for a, b, what in comparisons(spec)]
    runs = sorted({row.run for row in rows(spec)})
    walls = {f"{arm}/seed{seed}": wall_seconds(run_dir(root, arm, seed)) for arm in runs for seed in spec.seeds}
    return {"questions": len(qids or []), "rows": table, "comparisons": diffs,
            "run_wall_s": walls, "run_wall_s_total": float(sum(walls.values()))}


def _row_entry(root: Path, row: Row, spec: TableSpec, matched: Matched, s: np.ndarray, calls: float
               ) -> dict[str, Any]:
    # trained LoRA parameters: an untrained graph's adapters are all zero (LoRA B = 0)
    single = row.widths == (1,)
    lora = 0 if row.steps == 0 else (matched.single_total if single else matched.per_node_small * nodes(row.widths))
    return {"label": row.label, "run": row.run, "pass": row.pass_name, "vote": row.vote,
            "llm_calls_per_question": calls, "lora_params": lora, "steps": row.steps,
            "small_steps": row.small_steps, "accuracy": seeds_ci(s).as_dict(),
            "per_seed": [{"seed": seed, **bootstrap_ci(v).as_dict(),
                          "run_wall_s": wall_seconds(run_dir(root, row.run, seed))}
                         for seed, v in zip(spec.seeds, s)]}


def curves(root: Path, spec: TableSpec) -> dict[str, list[dict[str, Any]]]:
    """Training reward and held-out accuracy per step of the trained graphs, on one step axis
    (a grown run's steps start after the small run's)."""
    from neuromas_dist.run_dir import read_metrics

    out: dict[str, list[dict[str, Any]]] = {}
    runs = [("neuromas3", 0), ("neuromas7_scratch", 0)] + [(f"neuromas7_grown_{m}", spec.small_steps)
                                                           for m in spec.growth_modes]
    runs += [("neuromas5_grown", spec.small_steps), ("neuromas7_grown_via5", spec.small_steps + spec.large_steps)]
    for arm, offset in runs:
        points = []
        for seed in spec.seeds:
            for r in read_metrics(run_dir(root, arm, seed) / "metrics.jsonl"):
                points.append({"seed": seed, "step": r["step"] + offset, "reward": r.get("rollout/reward_mean"),
                               "accuracy": r.get("eval/accuracy")})
        out[arm] = points
    return out
