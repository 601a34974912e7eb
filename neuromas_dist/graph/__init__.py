"""The agent graph: topology, role-free node prompts, and progressive growth."""

from neuromas_dist.graph.growth import describe_growth, growth_mapping
from neuromas_dist.graph.prompts import (
    PromptBody,
    RenderedPrompt,
    position_label,
    render_body,
    render_node_prompt,
)
from neuromas_dist.graph.topology import Node, Topology, TopologyError, parse_edge, parse_node_name

__all__ = [
    "Node",
    "PromptBody",
    "RenderedPrompt",
    "Topology",
    "TopologyError",
    "describe_growth",
    "growth_mapping",
    "parse_edge",
    "parse_node_name",
    "position_label",
    "render_body",
    "render_node_prompt",
]
