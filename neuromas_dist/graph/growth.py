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
"""

from __future__ import annotations

from collections.abc import Mapping

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
