"""Growth in a run: when the graph grows, what the grown graph's adapters start from, and
its gate while the new nodes fade in. The rule that maps nodes is ``graph/growth.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from neuromas_dist.adapters.peft_io import AdapterSet, read_adapter_set
from neuromas_dist.config import Config
from neuromas_dist.graph.growth import GrowthGate, describe_growth, growth_mapping
from neuromas_dist.graph.topology import Topology, parse_node_name
from neuromas_dist.rollout.adapters import check_adapter_shapes, lora_shapes


def scheduled_widths(cfg: Config, step: int) -> tuple[int, ...] | None:
    """The widths of the last ``trainer.growth`` stage at or before ``step`` (None before any)."""
    due = [g for g in cfg.trainer.growth if g.at_step <= step]
    return tuple(max(due, key=lambda g: g.at_step).widths) if due else None


def crosses_growth(cfg: Config, step: int, later: int) -> bool:
    """Does the graph grow after ``step`` and by ``later``? (Then ``later``'s rollout needs the grown graph.)"""
    return any(step < g.at_step <= later for g in cfg.trainer.growth)


def growth_gate(cfg: Config, small: Topology, large: Topology, last_small_step: int,
                say: Callable[[str], None]) -> GrowthGate | None:
    """The gate of ``large`` grown from ``small`` after step ``last_small_step`` (None in
    carry mode, or with no fade: then every node runs at once)."""
    t = cfg.trainer
    if t.growth_mode != "gated" or t.growth_fade_steps == 0:
        return None
    gate = GrowthGate.build(small, large, last_small_step, t.growth_fade_steps, t.seed)
    say(f"growth gated: step {last_small_step + 1} runs the grown graph on 1/{t.growth_fade_steps} of "
        f"its samples, step {last_small_step + t.growth_fade_steps} on all; the rest run "
        f"{list(small.widths)} on nodes {', '.join(gate.carried.values())}")
    return gate


def map_adapters(small: AdapterSet, small_topo: Topology, large: Topology) -> tuple[AdapterSet, str]:
    """The larger topology's adapters from the smaller one's, by the graph's growth
    mapping: carried-over nodes get their trained adapter, new nodes none (they keep
    their zero-contribution init). Returns the set and a one-line description."""
    mapping = growth_mapping(small_topo, large)
    grown = AdapterSet(small.version, {new: small.tensors[old] for new, old in mapping.items() if old},
                       small.peft_config)
    return grown, "; ".join(describe_growth(mapping).splitlines())


def adapters_from_run(small_run: Path, large: Topology) -> tuple[AdapterSet, Topology, str]:
    """:func:`map_adapters` from a finished run's ``adapters/`` (PEFT layout); also returns
    the small run's topology."""
    small = read_adapter_set(Path(small_run) / "adapters", version=0)
    small_topo = Topology.build(widths_of(small.tensors))
    grown, how = map_adapters(small, small_topo, large)
    return grown, small_topo, how


def check_grow_from(cfg: Config, model_dir: str) -> None:
    """Raise IncompatibleAdapters unless ``trainer.grow_from``'s adapters fit this run's
    base model and LoRA config (checked on the meta device, before anything starts)."""
    small = read_adapter_set(Path(cfg.trainer.grow_from) / "adapters", version=0)
    shapes, _ = lora_shapes(model_dir, cfg.lora, trust_remote_code=cfg.model.trust_remote_code)
    check_adapter_shapes(small, shapes, f"trainer.grow_from={cfg.trainer.grow_from}")


def widths_of(nodes: Any) -> tuple[int, ...]:
    """Layer widths from node names L<layer>N<index> (a run's saved adapters)."""
    layers: dict[int, int] = {}
    for name in nodes:
        layer, index = parse_node_name(name)
        layers[layer] = max(layers.get(layer, 0), index + 1)
    return tuple(layers[i] for i in range(len(layers)))
