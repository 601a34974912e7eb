"""Every training run of the table, derived from one NeuroMAS-3 config.

The arms differ only where the comparison needs them to: the topology, the single
arm's LoRA rank, where a grown arm starts, the step count. Task, data, evaluation
questions, sampling, learner and per-step batch are the config's for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from neuromas_dist.config import Config

LARGE_WIDTHS = (4, 2, 1)
MID_WIDTHS = (2, 2, 1)  # NeuroMAS-5: the paper does not give its graph; a layer in front of NeuroMAS-3


@dataclass(frozen=True)
class TableSpec:
    small_steps: int  # C: training steps of NeuroMAS-3 and of the single-LLM arm
    large_steps: int  # D: steps of NeuroMAS-7 from scratch, and of each grown arm after growth
    seeds: tuple[int, ...]  # trainer.seed of every trained arm
    small_widths: tuple[int, ...] = (2, 1)  # the config's graph, NeuroMAS-3 in the paper
    large_widths: tuple[int, ...] = LARGE_WIDTHS
    growth_modes: tuple[str, ...] = ("gated", "carry")
    mid_widths: tuple[int, ...] = MID_WIDTHS  # grown 3 -> 5, and 3 -> 5 -> 7 beside 3 -> 7 (gated)

    def validate(self) -> "TableSpec":
        from neuromas_dist.graph.growth import growth_mapping
        from neuromas_dist.graph.topology import Topology

        if not self.seeds:
            raise ValueError("the table needs at least one seed")
        for a, b in ((self.small_widths, self.large_widths), (self.small_widths, self.mid_widths),
                     (self.mid_widths, self.large_widths)):
            growth_mapping(Topology.build(a), Topology.build(b))  # TopologyError if not
        if not 0 < self.small_steps < self.large_steps:
            raise ValueError(f"need 0 < small steps ({self.small_steps}) < large steps ({self.large_steps}): "
                             "the grown arm at equal total steps trains large - small steps after growth")
        return self

    @property
    def equal_total_step(self) -> int:
        """Steps after growth at which a grown arm has trained as long in total as NeuroMAS-7 scratch."""
        return self.large_steps - self.small_steps

    @property
    def vote_calls(self) -> tuple[int, int]:
        """Majority-vote sizes: as many LLM calls per question as the small and the large graph make."""
        return nodes(self.small_widths), nodes(self.large_widths)


class Arm(NamedTuple):
    name: str  # run directory name under the table's runs dir
    overrides: tuple[str, ...]  # dotted config overrides on top of the NeuroMAS-3 config
    grow_from: str | None  # arm whose final adapters (same seed) this arm grows from


class Matched(NamedTuple):
    rank: int
    alpha: float
    per_node_small: int  # LoRA parameters of one NeuroMAS-3 node
    small_total: int  # ... of all NeuroMAS-3 nodes
    single_total: int  # ... of the single-LLM arm's one adapter


def nodes(widths) -> int:
    return sum(widths)


def matched_rank(cfg: Config, model_config) -> Matched:
    """The single adapter's rank whose LoRA parameter count equals all NeuroMAS-3 nodes'
    together; alpha scales with it so the LoRA scale alpha/rank is the same."""
    from neuromas_dist.adapters.counting import lora_param_count

    targets, rank, n = cfg.lora.target_modules, cfg.lora.rank, nodes(cfg.topology.widths)
    per_node = lora_param_count(model_config, targets, rank)
    if per_node == 0:
        raise ValueError(f"lora.target_modules={list(targets)} match no Linear module of the model")
    single = lora_param_count(model_config, targets, rank * n)
    if single != per_node * n:  # LoRA counts are linear in the rank; a check, not a search
        raise ValueError(f"no single rank matches {n} x rank {rank}: rank {rank * n} gives {single}, "
                         f"not {per_node * n}")
    return Matched(rank * n, cfg.lora.alpha * n, per_node, per_node * n, single)


def build_arms(cfg: Config, spec: TableSpec, matched: Matched) -> list[Arm]:
    """The trained arms in the order they must run (grown arms after the run they grow from)."""
    if tuple(cfg.topology.widths) != tuple(spec.small_widths) or cfg.topology.edges:
        raise ValueError(f"the table's config must be the small graph {list(spec.small_widths)} with full "
                         f"connectivity, got widths {list(cfg.topology.widths)} and edges {list(cfg.topology.edges)}")
    common = ("trainer.eval_samples=0", "trainer.final_ablation=false", "trainer.growth=[]")
    large = (f"topology.widths={list(spec.large_widths)}", f"trainer.steps={spec.large_steps}",
             f"trainer.eval_every={spec.equal_total_step}")
    small_eval = max(1, spec.small_steps // 3)
    arms = [
        Arm("single", common + ("topology.widths=[1]", f"lora.rank={matched.rank}", f"lora.alpha={matched.alpha}",
                                f"trainer.steps={spec.small_steps}", f"trainer.eval_every={small_eval}",
                                f"trainer.eval_samples={max(spec.vote_calls)}"), None),
        Arm("neuromas3", common + (f"trainer.steps={spec.small_steps}", f"trainer.eval_every={small_eval}"), None),
        Arm("neuromas7_scratch", common + large, None),
    ]
    for mode in spec.growth_modes:
        arms.append(Arm(f"neuromas7_grown_{mode}", common + large + (f"trainer.growth_mode={mode}",), "neuromas3"))
    mid = (f"topology.widths={list(spec.mid_widths)}",) + large[1:]
    gated = ("trainer.growth_mode=gated",)
    arms += [Arm("neuromas5_grown", common + mid + gated, "neuromas3"),
             Arm("neuromas7_grown_via5", common + large + gated, "neuromas5_grown")]
    return arms


def run_dir(root: Path, arm: str, seed: int) -> Path:
    return Path(root) / arm / f"seed{seed}"


def arm_overrides(arm: Arm, root: Path, seed: int) -> list[str]:
    """All overrides of one arm-seed run, including where it writes and what it grows from."""
    out = [*arm.overrides, f"trainer.seed={seed}", f"logging.run_dir={run_dir(root, arm.name, seed)}"]
    if arm.grow_from:
        out.append(f"trainer.grow_from={run_dir(root, arm.grow_from, seed)}")
    return out
