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


# ---------------------------------------------------------------- zero-contribution gate

import pickle  # noqa: E402

from neuromas_dist.graph.growth import GrowthGate, carried_nodes, open_share  # noqa: E402


def test_carried_nodes_are_the_first_of_each_aligned_layer():
    assert carried_nodes(Topology.build([2, 1]), Topology.build([4, 2, 1])) == {
        "L0N0": "L1N0", "L0N1": "L1N1", "L1N0": "L2N0"}
    # widened copies (L0N2 <- L0N0) are not carried: a gated sample does not run them
    assert carried_nodes(Topology.build([2, 1]), Topology.build([3, 1])) == {
        "L0N0": "L0N0", "L0N1": "L0N1", "L1N0": "L1N0"}


@pytest.mark.parametrize("step,share", [(0, 0.0), (3, 0.0), (4, 0.2), (8, 1.0), (20, 1.0)])
def test_open_share_rises_linearly_from_the_growth_step(step, share):
    assert open_share(step, start_step=3, fade_steps=5) == pytest.approx(share)


def test_open_share_without_fade_is_open_at_once():
    assert open_share(0, 0, 0) == 1.0


def test_gate_is_closed_at_growth_open_after_the_fade_and_monotone():
    gate = GrowthGate.build(Topology.build([2, 1]), Topology.build([4, 2, 1]), start_step=0, fade_steps=4, seed=0)
    keys = [(f"q{i}", k) for i in range(300) for k in range(4)]
    shares = [sum(gate.opens(step, q, k) for q, k in keys) / len(keys) for step in range(6)]
    assert shares[0] == 0.0 and shares[4] == shares[5] == 1.0
    for step in (1, 2, 3):  # the draw is uniform: the share opened is step/4 within 4 standard errors
        se = (0.25 * step * (1 - 0.25 * step) / len(keys)) ** 0.5
        assert abs(shares[step] - step / 4) < 4 * se
    # a sample that opened stays open as the share rises
    for q, k in keys:
        assert [gate.opens(s, q, k) for s in range(5)] == sorted(gate.opens(s, q, k) for s in range(5))


def test_gate_travels_to_ray_actors_and_through_a_checkpoint():
    import json

    gate = GrowthGate.build(Topology.build([2, 1]), Topology.build([4, 2, 1]), 9, 5, 1)
    assert pickle.loads(pickle.dumps(gate)) == gate  # a Topology inside would not pickle (mappingproxy)
    back = GrowthGate.from_dict(json.loads(json.dumps(gate.to_dict())))
    assert back == gate and back.opens(10, "q", 0) == gate.opens(10, "q", 0)
