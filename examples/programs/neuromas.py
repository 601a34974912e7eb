"""The NeuroMAS graph of the default config, written as an agent program with the public client.

Each node is an agent (its adapter named as the node), called once per sample; a node's
prompt is the built-in one (``graph.prompts``) over its upstream nodes' replies, and the
sink's reply is the answer. For the default config this program's rows equal the built-in
graph executor's, token for token and logprob for logprob (tests/rollout/test_programs.py):
the graph is one program among others, run by the same runtime.
"""

from __future__ import annotations

import asyncio
import functools

from neuromas_dist.config import Config
from neuromas_dist.graph.prompts import render_body
from neuromas_dist.graph.topology import Topology
from neuromas_dist.tasks import synthetic_task

CFG = Config()  # the default run: topology [2, 1], synthetic/hier
GRAPH = Topology.of_config(CFG.topology.widths, CFG.topology.edges)
ANSWER_FORMAT = synthetic_task(CFG.data.task.removeprefix("synthetic/")).answer_format


async def solve(question: str, client) -> str:
    replies: dict[str, asyncio.Task] = {}

    async def node(name: str) -> str:
        inputs = GRAPH.node(name).inputs
        upstream = dict(zip(inputs, await asyncio.gather(*(replies[src] for src in inputs))))
        body = render_body(GRAPH, name, question, upstream, _tokenizer(), answer_format=ANSWER_FORMAT,
                           upstream_token_budget=CFG.topology.upstream_token_budget,
                           upstream_cut=CFG.topology.upstream_cut).text
        response = await client.chat.completions.create(model=name, messages=[{"role": "user", "content": body}])
        return response.choices[0].message.content

    for name in GRAPH.names:  # layer order: every input's task exists before it is awaited
        replies[name] = asyncio.ensure_future(node(name))
    try:
        return (await asyncio.gather(*replies.values()))[-1]  # the sink's reply
    finally:
        for task in replies.values():
            task.cancel()


@functools.cache
def _tokenizer():
    """The tokenizer the upstream cut counts with (the default config's tiny model)."""
    from transformers import AutoTokenizer

    from neuromas_dist.models.tiny import ensure_tiny_model

    return AutoTokenizer.from_pretrained(ensure_tiny_model(seed=CFG.model.tiny_seed))
