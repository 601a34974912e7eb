import pytest

from neuromas_dist.graph.growth import describe_growth, growth_mapping
from neuromas_dist.graph.topology import Topology, TopologyError


def test_neuromas3_to_neuromas7():
    mapping = growth_mapping(Topology.build([2, 1]), Topology.build([4, 2, 1]))
    assert mapping == {
        "L0N0": None,
        "L0N1": None,
        "L0N2": None,
        "L0N3": None,
        "L1N0": "L0N0",
        "L1N1": "L0N1",
        "L2N0": "L1N0",
    }
    assert list(mapping) == list(Topology.build([4, 2, 1]).names)


def test_widening_copies_round_robin():
    mapping = growth_mapping(Topology.build([2, 1]), Topology.build([5, 1]))
    assert mapping == {"L0N0": "L0N0", "L0N1": "L0N1", "L0N2": "L0N0", "L0N3": "L0N1", "L0N4": "L0N0", "L1N0": "L1N0"}


def test_single_llm_grows_into_neuromas3_sink_keeps_adapter():
    mapping = growth_mapping(Topology.build([1]), Topology.build([2, 1]))
    assert mapping == {"L0N0": None, "L0N1": None, "L1N0": "L0N0"}


def test_identity_growth():
    topo = Topology.build([4, 2, 1])
    assert growth_mapping(topo, topo) == {name: name for name in topo.names}


def test_rejects_shallower_or_narrower_large():
    with pytest.raises(TopologyError, match="fewer layers \\(2 < 3\\)"):
        growth_mapping(Topology.build([4, 2, 1]), Topology.build([2, 1]))
    with pytest.raises(TopologyError, match="large layer 1 has width 1 < 2 of small layer 0"):
        growth_mapping(Topology.build([2, 1]), Topology.build([4, 1, 1]))


def test_describe_growth_lines():
    mapping = growth_mapping(Topology.build([1]), Topology.build([2, 1]))
    lines = describe_growth(mapping).splitlines()
    assert lines[2] == "L1N0 <- L0N0"
    assert lines[0].startswith("L0N0 <- fresh") and "base model" in lines[0]
    assert len(lines) == 3
