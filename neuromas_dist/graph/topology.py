"""Agent-graph topology: layers of role-free LLM nodes connected by text edges.

A topology is a layered DAG. Layer 0 nodes read only the question; every later node
reads the text of at least one node in an earlier layer (edges may skip layers); the
last layer holds exactly one node, the sink, whose text is the answer. Every other
node must be read by someone, otherwise its LLM call would be wasted work that the
terminal reward could never credit.

Nodes are named ``L{layer}N{index}`` (0-based), so names are stable across runs and
double as adapter names on the rollout and learner side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_NAME_RE = re.compile(r"L(\d+)N(\d+)")
_EDGE_SEPARATOR = "->"
_DICT_KEYS = frozenset({"widths", "edges"})

Edge = tuple[str, str]


class TopologyError(ValueError):
    """An invalid topology or a request naming a node or edge it does not have."""


def node_name(layer: int, index: int) -> str:
    return f"L{layer}N{index}"


def is_node_name(name: object) -> bool:
    """Whether ``name`` is a graph node's name (``L<layer>N<index>``), not a program's agent."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def parse_node_name(name: str) -> tuple[int, int]:
    """``"L1N0"`` -> ``(1, 0)``; the (layer, index) pair is also the sort key of nodes."""
    match = _NAME_RE.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise TopologyError(f"bad node name {name!r}: expected 'L<layer>N<index>', e.g. 'L0N1'")
    return int(match.group(1)), int(match.group(2))


def parse_edge(text: str) -> Edge:
    """``"L0N0->L1N0"`` -> ``("L0N0", "L1N0")``, so YAML configs can list edges as strings."""
    parts = [part.strip() for part in str(text).split(_EDGE_SEPARATOR)]
    if len(parts) != 2:
        raise TopologyError(f"bad edge {text!r}: expected 'L<a>N<b>->L<c>N<d>'")
    for part in parts:
        parse_node_name(part)
    return parts[0], parts[1]


def format_edge(edge: Edge) -> str:
    return f"{edge[0]}{_EDGE_SEPARATOR}{edge[1]}"


@dataclass(frozen=True)
class Node:
    name: str
    layer: int
    index: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Topology:
    """A validated agent graph; construct it with :meth:`Topology.build`."""

    widths: tuple[int, ...]
    nodes: tuple[Node, ...]
    _by_name: Mapping[str, Node] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A read-only lookup table; frozen dataclasses need object.__setattr__ here.
        object.__setattr__(self, "_by_name", MappingProxyType({n.name: n for n in self.nodes}))

    @classmethod
    def of_config(cls, widths: Sequence[int], edges: Sequence[Edge | str] = ()) -> Topology:
        """The topology as a config spells it: ``topology.edges`` empty means full links
        between consecutive layers. Every config-driven caller builds through here."""
        return cls.build(tuple(widths), list(edges) or None)

    @classmethod
    def build(cls, widths: Sequence[int], edges: Sequence[Edge | str] | None = None) -> Topology:
        """Validate ``widths`` and ``edges`` (None: full links between consecutive layers)."""
        widths = _check_widths(widths)
        names = [node_name(layer, i) for layer, width in enumerate(widths) for i in range(width)]
        edge_list = _full_edges(widths) if edges is None else _check_edges(edges, set(names))
        inputs: dict[str, list[str]] = {name: [] for name in names}
        outputs: dict[str, list[str]] = {name: [] for name in names}
        for src, dst in edge_list:
            outputs[src].append(dst)
            inputs[dst].append(src)
        _check_reachability(names, inputs, outputs)
        nodes = tuple(
            Node(name, *parse_node_name(name), _sorted(inputs[name]), _sorted(outputs[name]))
            for name in names
        )
        return cls(widths=widths, nodes=nodes)

    def positions(self) -> dict[str, tuple[int, int]]:
        """node -> (layer, index), as its trajectory rows record it."""
        return {n.name: (n.layer, n.index) for n in self.nodes}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    @property
    def sink(self) -> str:
        return self.nodes[-1].name

    @property
    def num_layers(self) -> int:
        return len(self.widths)

    @property
    def edges(self) -> tuple[Edge, ...]:
        return tuple((n.name, dst) for n in self.nodes for dst in n.outputs)

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise TopologyError(f"unknown node {name!r}: topology has {', '.join(self.names)}") from None

    def layer_nodes(self, layer: int) -> tuple[Node, ...]:
        if not 0 <= layer < self.num_layers:
            raise TopologyError(f"unknown layer {layer}: topology has layers 0..{self.num_layers - 1}")
        return tuple(n for n in self.nodes if n.layer == layer)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; edges as strings so the dict reads like a YAML config."""
        return {"widths": list(self.widths), "edges": [format_edge(e) for e in self.edges]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Topology:
        unknown = sorted(set(data) - _DICT_KEYS)
        if unknown:
            raise TopologyError(f"unknown topology key(s) {', '.join(map(str, unknown))}: expected widths, edges")
        if "widths" not in data:
            raise TopologyError("topology is missing the 'widths' key")
        return cls.build(data["widths"], data.get("edges"))

    def __len__(self) -> int:
        return len(self.nodes)


def _sorted(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(names, key=parse_node_name))


def _check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    widths = tuple(widths)
    if not widths:
        raise TopologyError("widths is empty: a topology needs at least one layer")
    for layer, width in enumerate(widths):
        # bool is an int subclass; True as a width is almost surely a config mistake.
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise TopologyError(f"layer {layer} has width {width!r}: widths must be integers >= 1")
    if widths[-1] != 1:
        raise TopologyError(
            f"last layer {len(widths) - 1} has width {widths[-1]}: it must hold exactly one sink node"
        )
    return widths


def _full_edges(widths: tuple[int, ...]) -> list[Edge]:
    return [
        (node_name(layer, i), node_name(layer + 1, j))
        for layer in range(len(widths) - 1)
        for i in range(widths[layer])
        for j in range(widths[layer + 1])
    ]


def _check_edges(edges: Sequence[Edge | str], known: set[str]) -> list[Edge]:
    seen: set[Edge] = set()
    for raw in edges:
        edge = parse_edge(raw) if isinstance(raw, str) else _as_pair(raw)
        label = format_edge(edge)
        for end in edge:
            if end not in known:
                raise TopologyError(f"edge {label} names missing node {end}")
        (src_layer, _), (dst_layer, _) = map(parse_node_name, edge)
        if dst_layer == src_layer:
            raise TopologyError(f"edge {label} stays within layer {src_layer}: edges must go to a later layer")
        if dst_layer < src_layer:
            # Forward-only edges make cycles impossible, so a backward edge is the only way to get one.
            raise TopologyError(
                f"edge {label} goes backwards (layer {src_layer} -> {dst_layer}) and would allow a cycle"
            )
        if edge in seen:
            raise TopologyError(f"edge {label} is listed twice")
        seen.add(edge)
    return sorted(seen, key=lambda e: (parse_node_name(e[0]), parse_node_name(e[1])))


def _as_pair(raw: Any) -> Edge:
    if isinstance(raw, Sequence) and len(raw) == 2 and all(isinstance(x, str) for x in raw):
        for end in raw:
            parse_node_name(end)
        return raw[0], raw[1]
    raise TopologyError(f"bad edge {raw!r}: expected ('L<a>N<b>', 'L<c>N<d>') or 'L<a>N<b>->L<c>N<d>'")


def _check_reachability(
    names: list[str], inputs: dict[str, list[str]], outputs: dict[str, list[str]]
) -> None:
    sink = names[-1]
    for name in names:
        layer, _ = parse_node_name(name)
        if name != sink and not outputs[name]:
            raise TopologyError(
                f"node {name} is read by no node (a second sink): only the sink {sink} may have no readers"
            )
        if layer > 0 and not inputs[name]:
            raise TopologyError(
                f"node {name} in layer {layer} has no inputs: only layer-0 nodes read the question alone"
            )
