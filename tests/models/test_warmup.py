"""The warm-up (neuromas_dist.models.warmup) never ties a target to a node's position:
the sub-result a non-sink node is taught is a function of the question and the random
draw alone, x and y come about half the time at every node, and the sink answers."""

from __future__ import annotations

import inspect
import math
import random
from collections import Counter, defaultdict

import pytest

from neuromas_dist.graph.topology import Topology
from neuromas_dist.models.warmup import make_example, sample_examples, sink_reply, target_for, upstream_statement
from neuromas_dist.tasks.synthetic import (
    SYNTHETIC_ANSWER_FORMAT,
    make_synthetic,
    subresult_sentence,
    subresults,
)

Q = "Let x = (4 + 8) mod 10 and y = (8 * 7) mod 10. What is (x + y) mod 10?"  # x=2, y=6
QA = (Q, "8")
X_SENTENCE, Y_SENTENCE = "x = (4 + 8) mod 10 = 2.", "y = (8 * 7) mod 10 = 6."
TOPOLOGIES = ((1,), (2, 1), (4, 2, 1))
FMT = SYNTHETIC_ANSWER_FORMAT


def _qas(kind: str, n: int = 500) -> list[tuple[str, str]]:
    return [(e.question, e.answer) for e in make_synthetic(kind, "train", n, 0)]


@pytest.fixture(scope="module")
def hier_examples():
    """6000 warm-up examples over hier questions and the three topologies."""
    return sample_examples({"hier": _qas("hier")}, [("hier", 1.0)], TOPOLOGIES, 6000,
                           random.Random(0), 0.9, FMT)


def test_target_for_takes_no_node():
    """The signature has no way to receive a node, layer or topology."""
    assert list(inspect.signature(target_for).parameters) == ["qa", "is_sink", "upstream", "rng"]


def test_target_depends_on_the_draw_not_the_node():
    """Same seed, same question: every first-layer (non-sink, no-input) node of (2,1)
    and (4,2,1) gets the target target_for gives; both x and y occur across seeds."""
    firsts = [(Topology.build(w), f"L0N{i}") for w in ((2, 1), (4, 2, 1)) for i in range(w[0])]
    seen = set()
    for seed in range(40):
        expected = target_for(QA, False, [], random.Random(seed))
        assert expected == target_for(QA, False, [], random.Random(seed))
        for topology, node in firsts:
            ex = make_example(topology, node, QA, random.Random(seed), 0.9, FMT)
            assert (ex.target, ex.target_kind) == expected
        seen.add(expected)
    assert seen == {(X_SENTENCE, "x"), (Y_SENTENCE, "y")}


def test_upstream_draws_come_before_the_target():
    """For a node with inputs, the target is target_for after one upstream draw per
    input; both layer-1 nodes of (4,2,1) (4 inputs each) get the same one."""
    topology = Topology.build((4, 2, 1))
    for seed in range(20):
        rng = random.Random(seed)
        upstream = [upstream_statement(QA, rng, 0.9) for _ in range(4)]
        expected = target_for(QA, False, upstream, rng)
        for node in ("L1N0", "L1N1"):
            ex = make_example(topology, node, QA, random.Random(seed), 0.9, FMT)
            assert (ex.target, ex.target_kind) == expected


def test_every_non_sink_node_writes_x_about_half_the_time(hier_examples):
    """Per (topology, non-sink node) with >= 100 examples, the share of x targets is
    within 4 standard errors (sqrt(0.25 / n)) of 0.5; no node gets only one kind."""
    kinds = defaultdict(list)
    for ex in hier_examples:
        if ex.node != Topology.build(ex.topology).sink:
            kinds[ex.topology, ex.node].append(ex.target_kind)
    # (2,1) has 2 non-sink nodes, (4,2,1) has 6; (1,) has none.
    assert set(kinds) == {((2, 1), "L0N0"), ((2, 1), "L0N1")} | {
        ((4, 2, 1), n) for n in ("L0N0", "L0N1", "L0N2", "L0N3", "L1N0", "L1N1")}
    checked = 0
    for key, ks in kinds.items():
        assert set(ks) == {"x", "y"}, key
        if len(ks) >= 100:
            checked += 1
            share = ks.count("x") / len(ks)
            assert abs(share - 0.5) <= 4 * math.sqrt(0.25 / len(ks)), (key, share, len(ks))
    assert checked == 8


def test_non_sink_targets_are_the_question_s_own_subresults(hier_examples):
    """A non-sink target is exactly one of the question's two sub-result sentences."""
    for ex in hier_examples:
        if ex.target_kind != "answer":
            question = ex.body.split("\n")[0].removeprefix("Question: ")
            parts = subresults(question)
            assert ex.target == subresult_sentence(ex.target_kind, parts[ex.target_kind])


def test_sinks_write_the_last_step_with_what_they_read(hier_examples):
    """A sink writes "(x + y) mod 10 = (X + Y) mod 10" with the values its upstream
    texts state, "?" for a value none states; the answer follows from the values read
    (even wrong ones), or is the gold answer when a value is unknown."""
    sinks = [ex for ex in hier_examples if ex.node == Topology.build(ex.topology).sink]
    assert len(sinks) > 1000
    assert all(ex.target_kind == "answer" and ex.target.startswith("(x + y) mod 10 = (") for ex in sinks)
    x, y = f"x = {subresults(Q)['x'].expression} = 2.", f"y = {subresults(Q)['y'].expression} = 6."
    assert sink_reply(Q, "8", [y, x]) == "(x + y) mod 10 = (2 + 6) mod 10 = 8. The answer is 8."
    assert sink_reply(Q, "8", [x, x]) == "(x + y) mod 10 = (2 + ?) mod 10. The answer is 8."
    assert sink_reply(Q, "8", []) == "(x + y) mod 10 = (? + ?) mod 10. The answer is 8."
    wrong_y = y.replace("= 6.", "= 5.")
    assert sink_reply(Q, "8", [x, wrong_y]) == "(x + y) mod 10 = (2 + 5) mod 10 = 7. The answer is 7."
    for qa in _qas("hier", 50):
        assert target_for(qa, True, [], random.Random(1)) == (
            f"(x + y) mod 10 = (? + ?) mod 10. The answer is {qa[1]}.", "answer")


def test_questions_without_subresults_are_answered_by_every_node():
    """op and arith questions name no sub-results: every node, sink or not, answers."""
    qas = {"op": _qas("op", 100), "arith": _qas("arith", 100)}
    examples = sample_examples(qas, [("op", 1.0), ("arith", 1.0)], TOPOLOGIES, 1000,
                               random.Random(1), 0.9, FMT)
    assert {ex.node for ex in examples} >= {"L0N0", "L0N3", "L1N1"}
    gold = {q: a for pairs in qas.values() for q, a in pairs}
    for ex in examples:
        question = ex.body.split("\n")[0].removeprefix("Question: ")
        assert ex.target_kind == "answer"
        assert ex.target == f"The answer is {gold[question]}."


def test_no_target_names_a_position(hier_examples):
    """No taught reply mentions a node or a layer, on any task kind."""
    mixed = sample_examples({"hier": _qas("hier", 100), "op": _qas("op", 100), "arith": _qas("arith", 100)},
                            [("hier", 1.0), ("op", 1.0), ("arith", 1.0)], TOPOLOGIES, 1500,
                            random.Random(2), 0.9, FMT)
    targets = Counter(ex.target.lower() for ex in [*hier_examples, *mixed])
    for target in targets:
        assert "node" not in target and "layer" not in target, target
