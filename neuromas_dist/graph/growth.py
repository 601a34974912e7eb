"""Progressive growth: which trained adapter each node of a larger topology inherits.

Rule, applied to every node of the large topology:

1. Layers are aligned from the end. With ``d = large.num_layers - small.num_layers``,
   large layer ``l`` corresponds to small layer ``l - d``; the sink therefore always
   inherits the sink. Large layers with ``l < d`` are new front layers and start
   fresh (``None``: LoRA B = 0, the node acts as the base model).
2. Within an aligned layer, large node ``i`` inherits small node ``i mod w``, where
   ``w`` is the small layer's width; so the first ``w`` nodes keep their own adapter
   and extra nodes copy the existing ones round-robin.

Why: the paper's observation is that large graphs trained from scratch do badly and
grown ones train well, because every node starts from a known function. Aligning from
the end keeps the trained path into the sink intact (the part that produced rewarded
answers), and new layers go in front, where a base-model node only adds extra context
for trained readers instead of replacing them. Widened layers copy trained adapters
rather than start at the base model so no aligned position regresses; round-robin
(rather than copying node 0 everywhere) spreads whatever specialisation the small
layer had, and copies diverge under training because they see different positions
and sample different text. The rule depends only on the two shapes, so it is
deterministic and a grown run can be reproduced from its configs alone.

Zero contribution (``trainer.growth_mode=gated``). Copying adapters is not enough for
the grown graph to start as the trained small one: a fresh node's base-model text
still reaches trained readers, and every carried node now sees a different prompt
(its position, whom it reads). So a gated graph runs each sample either as the large
graph or as the small graph embedded in it (:class:`GrowthGate`): the *carried* nodes
(the first ``w`` of each aligned layer, one per small node) run with their small-graph
prompts and their own adapters, the new nodes do not run at all. The share of samples
that run the large graph rises linearly from 0 at the growth step to 1 after
``fade_steps`` steps (as a new layer fades in in progressive GANs), so at the growth
step the large graph computes exactly what the small graph computed, and new nodes
get gradient only from samples their text could affect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import NamedTuple

from neuromas_dist.graph.topology import Topology, TopologyError, node_name, parse_node_name

FRESH_LABEL = "fresh (LoRA B = 0, starts as the base model)"


def growth_mapping(small: Topology, large: Topology) -> dict[str, str | None]:
    """For each node of ``large`` (topological order), the ``small`` node it inherits or None."""
    offset = _check_growable(small, large)
    mapping: dict[str, str | None] = {}
    for node in large.nodes:
        small_layer = node.layer - offset
        if small_layer < 0:
            mapping[node.name] = None
        else:
            mapping[node.name] = node_name(small_layer, node.index % small.widths[small_layer])
    return mapping


def describe_growth(mapping: Mapping[str, str | None]) -> str:
    """One line per large node, e.g. ``"L1N1 <- L0N1"`` or ``"L0N0 <- fresh (...)"``."""
    names = sorted(mapping, key=parse_node_name)
    return "\n".join(f"{name} <- {mapping[name] or FRESH_LABEL}" for name in names)


def _check_growable(small: Topology, large: Topology) -> int:
    """Return the layer offset of the alignment, or raise if ``large`` cannot hold ``small``."""
    offset = large.num_layers - small.num_layers
    if offset < 0:
        raise TopologyError(
            f"cannot grow {list(small.widths)} into {list(large.widths)}: "
            f"the large topology has fewer layers ({large.num_layers} < {small.num_layers})"
        )
    for small_layer, small_width in enumerate(small.widths):
        large_width = large.widths[small_layer + offset]
        if large_width < small_width:
            raise TopologyError(
                f"cannot grow {list(small.widths)} into {list(large.widths)}: large layer "
                f"{small_layer + offset} has width {large_width} < {small_width} of small layer {small_layer}"
            )
    return offset


def carried_nodes(small: Topology, large: Topology) -> dict[str, str]:
    """small node -> the large node that carries it (same layer from the end, same index):
    the nodes that run a gated sample as the small graph."""
    mapping = growth_mapping(small, large)
    return {old: new for new, old in mapping.items()
            if old is not None and parse_node_name(new)[1] == parse_node_name(old)[1]}


def open_share(step: int, start_step: int, fade_steps: int) -> float:
    """Share of samples at ``step`` that run the grown graph: 0 up to ``start_step`` (the
    last step on the small graph), then +1/fade_steps per step up to 1 (fade_steps = 0: at once)."""
    if fade_steps <= 0:
        return 1.0
    return min(1.0, max(0.0, (step - start_step) / fade_steps))


class GrowthGate(NamedTuple):
    """Which samples of a grown graph run the large graph; the others run ``small``."""

    small: tuple[int, ...]  # the small graph's widths (a Topology does not pickle; Ray ships gates)
    carried: Mapping[str, str]  # small node -> large node whose adapter serves it
    start_step: int  # the last step on the small graph (share 0): at_step - 1 in a run, 0 grown from a run
    fade_steps: int
    seed: int

    @classmethod
    def build(cls, small: Topology, large: Topology, start_step: int, fade_steps: int, seed: int) -> "GrowthGate":
        return cls(tuple(small.widths), carried_nodes(small, large), start_step, fade_steps, seed)

    def opens(self, step: int, question_id: str, sample_index: int) -> bool:
        """Does this sample run the large graph? A fixed draw per (question, sample), so a
        sample that opened stays open as the share rises (and "before"/"after" compare alike)."""
        key = f"{self.seed}|{question_id}|{sample_index}".encode()
        u = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") / 2.0**64
        return u < open_share(step, self.start_step, self.fade_steps)

    def to_dict(self) -> dict:
        return {"small": list(self.small), "carried": dict(self.carried), "start_step": self.start_step,
                "fade_steps": self.fade_steps, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Mapping) -> "GrowthGate":
        """The gate :meth:`to_dict` saved (a checkpoint's), whatever the config says now."""
        return cls(tuple(d["small"]), dict(d["carried"]), int(d["start_step"]), int(d["fade_steps"]), int(d["seed"]))
