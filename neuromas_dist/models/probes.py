"""What the warmed-up tiny model can do, skill by skill, on held-out hier questions.

Greedy decoding with transformers on prompts rendered exactly as the rollout renders
them. The numbers go into build_info.json, so a reader sees what the base brings to RL
(single steps) and what it does not (a whole hierarchical question in one call).
"""

from __future__ import annotations

from collections.abc import Sequence

from neuromas_dist.graph.prompts import apply_chat, render_body
from neuromas_dist.graph.topology import Topology
from neuromas_dist.models import sft
from neuromas_dist.tasks.answers import extract_number_answer
from neuromas_dist.tasks.synthetic import stated_values, subresult_sentence, subresults

THREE = Topology.build((2, 1))
ONE = Topology.build((1,))


def _generate(model, tokenizer, topology: Topology, node: str, qas: Sequence[sft.QA], upstream, fmt: str) -> list[str]:
    bodies = [render_body(topology, node, q, upstream(q), answer_format=fmt).text for q, _ in qas]
    return sft._generate(model, tokenizer, [apply_chat(tokenizer, b) for b in bodies], 32)


def _answer_rate(outputs: Sequence[str], qas: Sequence[sft.QA]) -> float:
    return sum(extract_number_answer(o) == gold for o, (_, gold) in zip(outputs, qas)) / max(1, len(qas))


def _statements(names: tuple[str, str]):
    def upstream(question: str) -> dict[str, str]:
        parts = subresults(question)
        return {"L0N0": subresult_sentence(names[0], parts[names[0]]),
                "L0N1": subresult_sentence(names[1], parts[names[1]])}
    return upstream


def skill_probes(model, tokenizer, qas: Sequence[sft.QA], fmt: str) -> dict[str, float]:
    """Greedy accuracies of single skills on hier questions ``qas``:

    - ``single_call``: the whole question, one node (what a single LLM call does)
    - ``first_layer_subresult``: a first-layer node of the 3-node graph states x or y
      with the right value; ``first_layer_x_frac`` how often it picks x (role-free: the
      warm-up drew x and y at random, so which one greedy picks is arbitrary)
    - ``sink_reads_x_and_y``: the sink, given right statements of x and y
    - ``sink_reads_y_twice``: the sink, given y twice (x must be worked out alone)
    """
    first = _generate(model, tokenizer, THREE, "L0N0", qas, lambda q: {}, fmt)
    picked = [o.strip()[:1] for o in first]
    right = [p in ("x", "y") and subresults(q)[p].value in stated_values(o, p)
             for p, o, (q, _) in zip(picked, first, qas)]
    n = max(1, len(qas))

    def sink(names: tuple[str, str]) -> list[str]:
        return _generate(model, tokenizer, THREE, "L1N0", qas, _statements(names), fmt)

    return {
        "single_call": _answer_rate(_generate(model, tokenizer, ONE, "L0N0", qas, lambda q: {}, fmt), qas),
        "first_layer_subresult": sum(right) / n,
        "first_layer_x_frac": picked.count("x") / n,
        "sink_reads_x_and_y": _answer_rate(sink(("x", "y")), qas),
        "sink_reads_y_twice": _answer_rate(sink(("y", "y")), qas),
    }
