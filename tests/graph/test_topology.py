import json

import pytest

from neuromas_dist.graph.topology import Node, Topology, TopologyError, parse_edge, parse_node_name


def test_neuromas3_full_connectivity():
    topo = Topology.build([2, 1])
    assert topo.names == ("L0N0", "L0N1", "L1N0")
    assert topo.sink == "L1N0"
    assert topo.num_layers == 2
    assert topo.widths == (2, 1)
    assert len(topo) == 3
    assert topo.edges == (("L0N0", "L1N0"), ("L0N1", "L1N0"))
    assert topo.node("L1N0") == Node("L1N0", 1, 0, ("L0N0", "L0N1"), ())
    assert topo.node("L0N1") == Node("L0N1", 0, 1, (), ("L1N0",))


def test_neuromas7_layers_and_order():
    topo = Topology.build([4, 2, 1])
    assert len(topo) == 7
    assert [n.name for n in topo.layer_nodes(1)] == ["L1N0", "L1N1"]
    assert topo.node("L1N1").inputs == ("L0N0", "L0N1", "L0N2", "L0N3")
    assert topo.node("L0N2").outputs == ("L1N0", "L1N1")
    assert len(topo.edges) == 4 * 2 + 2
    assert [(n.layer, n.index) for n in topo.nodes] == sorted((n.layer, n.index) for n in topo.nodes)


def test_single_llm():
    topo = Topology.build([1])
    assert topo.names == ("L0N0",) and topo.sink == "L0N0" and topo.edges == ()


def test_skip_edges_and_string_edges_sort_inputs():
    topo = Topology.build([2, 1, 1], ["L1N0->L2N0", "L0N1->L2N0", "L0N0->L1N0", ("L0N1", "L1N0")])
    assert topo.node("L2N0").inputs == ("L0N1", "L1N0")
    assert topo.node("L0N1").outputs == ("L1N0", "L2N0")
    assert topo.edges == (("L0N0", "L1N0"), ("L0N1", "L1N0"), ("L0N1", "L2N0"), ("L1N0", "L2N0"))


def test_dict_round_trip_through_json():
    topo = Topology.build([2, 1, 1], ["L0N0->L1N0", "L0N1->L2N0", "L1N0->L2N0"])
    data = json.loads(json.dumps(topo.to_dict()))
    assert data == {"widths": [2, 1, 1], "edges": ["L0N0->L1N0", "L0N1->L2N0", "L1N0->L2N0"]}
    assert Topology.from_dict(data) == topo
    assert Topology.from_dict({"widths": [2, 1]}) == Topology.build([2, 1])


def test_parse_helpers():
    assert parse_edge(" L0N0 -> L1N0 ") == ("L0N0", "L1N0")
    assert parse_node_name("L12N3") == (12, 3)
    with pytest.raises(TopologyError, match="'L0N0>L1N0'"):
        parse_edge("L0N0>L1N0")
    with pytest.raises(TopologyError, match="'node1'"):
        parse_node_name("node1")


@pytest.mark.parametrize(
    "widths, edges, message",
    [
        ([], None, "widths is empty"),
        ([2, 0, 1], None, "layer 1 has width 0"),
        ([2, 2], None, "last layer 1 has width 2: it must hold exactly one sink"),
        ([1, 1], ["L0N0->L1N5"], "edge L0N0->L1N5 names missing node L1N5"),
        ([1, 1], ["L3N0->L1N0"], "edge L3N0->L1N0 names missing node L3N0"),
        ([2, 1], ["L0N0->L0N1", "L0N1->L1N0"], "edge L0N0->L0N1 stays within layer 0"),
        ([1, 1, 1], ["L0N0->L1N0", "L2N0->L1N0"], "edge L2N0->L1N0 goes backwards.*cycle"),
        ([2, 1], ["L0N0->L1N0"], "node L0N1 is read by no node \\(a second sink\\)"),
        ([1, 1, 1], ["L0N0->L1N0", "L0N0->L2N0"], "node L1N0 is read by no node"),
        ([1, 2, 1], ["L0N0->L1N0", "L1N0->L2N0", "L1N1->L2N0"], "node L1N1 in layer 1 has no inputs"),
        ([1, 1], ["L0N0->L1N0", "L0N0->L1N0"], "edge L0N0->L1N0 is listed twice"),
        ([1, 1], [("L0N0",)], "bad edge"),
    ],
)
def test_invalid_topologies_name_the_culprit(widths, edges, message):
    with pytest.raises(TopologyError, match=message) as info:
        Topology.build(widths, edges)
    assert "\n" not in str(info.value)


def test_lookup_errors_name_the_node_or_layer():
    topo = Topology.build([2, 1])
    with pytest.raises(TopologyError, match="unknown node 'L5N0'"):
        topo.node("L5N0")
    with pytest.raises(TopologyError, match="unknown layer 2"):
        topo.layer_nodes(2)
    with pytest.raises(TopologyError, match="unknown topology key.*width"):
        Topology.from_dict({"width": [2, 1]})
    with pytest.raises(TopologyError, match="missing the 'widths' key"):
        Topology.from_dict({"edges": []})


def test_topology_is_frozen_and_hashable():
    topo = Topology.build([2, 1])
    with pytest.raises(AttributeError):
        topo.widths = (1,)
    assert hash(topo) == hash(Topology.build([2, 1]))
