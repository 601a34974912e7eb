"""What the tiny model's supervised warm-up teaches, and what it must never teach.

The tiny base plays the part of a pre-trained LLM: it may bring general skills, never
the organisation of a graph, which joint RL has to find. Every warm-up example is one
node's prompt (a role-free node of a 1-, 3- or 7-node graph, exactly as the rollout
renders it) and a target reply. The skills, all drawn independently of the node's
position:

1. **Single operations.** "What is (a + b) mod 10?" and "What is (a * b) mod 10?"
   answered "The answer is N." (task kind ``op``).
2. **Answering a question directly.** ``arith`` and ``hier`` questions answered with
   the final answer, whatever the node reads: the same skill a single call has.
3. **Writing an intermediate result as text.** A node whose text goes to another node
   (not the sink) writes one named sub-result of the question, restating its
   definition: "x = (3 + 4) mod 10 = 7." or "y = (5 * 6) mod 10 = 0." (hier). *Which*
   sub-result is drawn uniformly at random for every example, with no input from the
   node's layer, index or graph: at the end of the warm-up every node writes x or y about
   half the time each.
4. **Reading upstream messages.** Upstream texts are sub-result statements (or, on
   arith, answer sentences), each drawn at random as above; the target uses the
   question, so a node learns that upstream statements can help, not which upstream
   node says what.

What it never teaches: that node i (or layer l) writes a particular sub-result, that
two nodes should write different ones, or any pipeline that ties a target to a
position. :func:`make_example` takes the node's place only to render the prompt;
the target is a function of the question and the random draw alone (asserted in
tests/models/test_warmup.py). So a trained graph in which node 1 always writes x and
node 2 always writes y has learnt that division of labour from the reward.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from neuromas_dist.graph.prompts import render_body
from neuromas_dist.graph.topology import Topology
from neuromas_dist.tasks.synthetic import answer_sentence, final_step, stated_values, subresult_sentence, subresults

# (question, gold answer) pairs.
QA = tuple[str, str]


UNKNOWN = "?"  # a sub-result value the node has not read


class WarmupExample(NamedTuple):
    body: str  # the node's user content, as the rollout renders it
    target: str  # the reply taught
    topology: tuple[int, ...]
    node: str
    target_kind: str  # "answer" or the name of the sub-result the target states


def upstream_statement(qa: QA, rng: random.Random, gold_prob: float) -> str:
    """A random upstream message for a question: one of its sub-results (hier) or an
    answer sentence (questions that name none), right with probability ``gold_prob``."""
    question, gold = qa
    parts = subresults(question)
    if parts:
        name = rng.choice(sorted(parts))
        part = parts[name] if rng.random() < gold_prob else parts[name]._replace(value=str(rng.randrange(10)))
        return subresult_sentence(name, part)
    return answer_sentence(gold if rng.random() < gold_prob else str(rng.randrange(10)))


def target_for(qa: QA, is_sink: bool, upstream: Sequence[str], rng: random.Random) -> tuple[str, str]:
    """(reply, kind) taught for a question. Takes no node: whether a node is the sink
    decides between answering and stating a sub-result, and nothing about *which*
    node it is can reach the choice of sub-result."""
    question, gold = qa
    parts = subresults(question)
    if not parts:
        return answer_sentence(gold), "answer"
    if is_sink:
        return sink_reply(question, gold, upstream), "answer"
    name = rng.choice(sorted(parts))
    return subresult_sentence(name, parts[name]), name


def sink_reply(question: str, gold: str, upstream: Sequence[str]) -> str:
    """The sink's reply: the question's last step written out with the values the
    upstream texts state (right or wrong: reading means using what was read), then the
    answer. A value no upstream text states is written "?" and the answer is then the
    gold one, which the node has to work out without help."""
    values = {}
    for name in subresults(question):
        stated = [v for text in upstream for v in stated_values(text, name)]
        values[name] = stated[0] if stated else UNKNOWN
    step, answer = final_step(values)
    return f"{step} {answer_sentence(gold if answer is None else answer)}"


def make_example(topology: Topology, node: str, qa: QA, rng: random.Random, gold_prob: float,
                 answer_format: str) -> WarmupExample:
    """One node's prompt and target for a question; upstream messages drawn at random."""
    upstream = {src: upstream_statement(qa, rng, gold_prob) for src in topology.node(node).inputs}
    body = render_body(topology, node, qa[0], upstream, answer_format=answer_format).text
    target, kind = target_for(qa, node == topology.sink, list(upstream.values()), rng)
    return WarmupExample(body, target, tuple(topology.widths), node, kind)


def sample_examples(qas: Mapping[str, Sequence[QA]], mix: Sequence[tuple[str, float]],
                    topologies: Sequence[tuple[int, ...]], n: int, rng: random.Random,
                    gold_prob: float, answer_format: str) -> list[WarmupExample]:
    """``n`` examples: a task kind drawn by ``mix`` weights, a random question of it, a
    random topology, a random node of that topology.

    One node per (question, topology) draw, so every topology gets the same share and
    wide graphs do not crowd out the single-node prompt; the node is drawn by
    :func:`_draw_node`, which looks at whether a node is the sink, never at its index.
    """
    built = [Topology.build(widths) for widths in topologies]
    kinds, weights = zip(*mix)
    out = []
    for _ in range(n):
        pool = qas[rng.choices(kinds, weights)[0]]
        qa = pool[rng.randrange(len(pool))]
        topology = built[rng.randrange(len(built))]
        out.append(make_example(topology, _draw_node(topology, rng), qa, rng, gold_prob, answer_format))
    return out


def _draw_node(topology: Topology, rng: random.Random) -> str:
    """The sink half the time, else a uniformly drawn other node: reading upstream and
    answering gets as many examples as stating sub-results, whatever the graph's width."""
    others = [n.name for n in topology.nodes if n.name != topology.sink]
    if not others or rng.random() < 0.5:
        return topology.sink
    return others[rng.randrange(len(others))]
