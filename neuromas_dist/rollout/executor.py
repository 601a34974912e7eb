"""Executing the agent graph on vLLM's async engine.

Two schedulers share one node-call path:

* ``per_sample``: every sample is its own asyncio task, and inside it every node is a
  task that waits only for *its own* upstream nodes of *the same* sample. A node is
  submitted the moment its inputs exist, so a slow sample never holds up the others
  and the engine's batch stays full.
* ``layer``: a barrier per layer: all samples' layer-l nodes are submitted together
  and layer l+1 starts when the slowest of them is done. Kept for comparison.

Either way all requests in flight reach the same engine concurrently, so vLLM batches
requests of different nodes (different LoRA adapters) and different samples together.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, NamedTuple, Sequence

from neuromas_dist.graph.growth import GrowthGate
from neuromas_dist.graph.prompts import PromptStyle, render_node_prompt
from neuromas_dist.graph.topology import Topology
from neuromas_dist.rollout.calls import (
    FINISH_ABORT,
    EngineCalls,
    NodeCall,
    SamplingPolicy,
    call_seed,
    request_seed,
    sampled_logprobs,
)
from neuromas_dist.rollout.lora_registry import Pin

__all__ = ["FINISH_ABORT", "GraphExecutor", "NodeCall", "Route", "SampleResult", "SampleSpec", "SamplingPolicy",
           "request_seed", "sampled_logprobs", "stream_samples"]


class SampleSpec(NamedTuple):
    """One pass of one question through the graph (or one run of a program)."""

    step: int  # the training step (decides a growth gate's share)
    example: Any  # tasks.Example: id, question, answer
    sample_index: int
    seed_step: int | None = None  # the step that seeds the request (None = step)

    def seed(self, base_seed: int, agent: str, call_index: int = 0) -> int:
        """The seed of ``agent``'s ``call_index``-th call in this sample."""
        step = self.step if self.seed_step is None else self.seed_step
        return call_seed(base_seed, step, str(self.example.id), self.sample_index, agent, call_index)


class Route(NamedTuple):
    """A gated sample's graph: the small topology, and the large node serving each of its nodes."""

    topology: Topology
    adapters: Mapping[str, str]


class SampleResult(NamedTuple):
    spec: SampleSpec
    version: int  # the adapter version every call of this sample used
    calls: tuple[NodeCall, ...]  # in the order they started (a graph: topology order; gated: the carried nodes)
    answer: str  # what is scored: the sink's text, or what the program returned
    flags: Counter = Counter()  # a program's faults (rollout/flag_program_*): the sample scores 0

    def by_agent(self) -> dict[str, NodeCall]:
        """agent -> its first call (a graph node's only one)."""
        out: dict[str, NodeCall] = {}
        for call in self.calls:
            out.setdefault(call.node, call)
        return out


RunSample = Callable[[SampleSpec, Pin, SamplingPolicy], Awaitable[SampleResult]]


async def stream_samples(run_sample: RunSample, specs: Sequence[SampleSpec], acquire: Callable[[], Pin],
                         release: Callable[[Pin], Any], policy: SamplingPolicy) -> AsyncIterator[SampleResult]:
    """Every sample its own task, yielded as it finishes; each pins one adapter version throughout."""
    async def one(spec: SampleSpec) -> SampleResult:
        pin = acquire()
        try:
            return await run_sample(spec, pin, policy)
        finally:
            release(pin)

    tasks = [asyncio.ensure_future(one(spec)) for spec in specs]
    try:
        for next_done in asyncio.as_completed(tasks):
            yield await next_done
    finally:
        for task in tasks:
            task.cancel()


class GraphExecutor:
    """Runs samples through ``topology``, every node call through ``calls`` (the engine path
    agent programs take too)."""

    def __init__(self, calls: EngineCalls, topology: Topology, *, answer_format: str,
                 upstream_token_budget: int, gate: GrowthGate | None = None,
                 style: PromptStyle = PromptStyle(),
                 node_policy: Callable[[str, SamplingPolicy], SamplingPolicy] | None = None) -> None:
        self.calls = calls
        self.topology = topology
        self.gate = gate  # a grown graph fading in: some samples run the small graph
        self._small = Topology.build(gate.small) if gate is not None else None
        self.tokenizer = calls.tokenizer
        self.answer_format = answer_format
        self.budget = upstream_token_budget
        self.style = style
        self.max_model_len = calls.max_model_len
        self.node_policy = node_policy  # (node, the pass's policy) -> the node's (sampling.per_node)

    # ------------------------------------------------------------ prompts

    def fit_prompt(self, node: str, question: str, upstream: Mapping[str, str], max_new_tokens: int,
                   topology: Topology | None = None) -> tuple[list[int] | None, bool]:
        """Token ids of the node's prompt, upstream cut harder (budget halved) until
        ``max_new_tokens`` fit; (None, True) when not even one new token fits."""
        budget, truncated = self.budget, False
        while True:
            rendered = render_node_prompt(topology or self.topology, node, question, upstream, self.tokenizer,
                                          answer_format=self.answer_format, upstream_token_budget=budget,
                                          style=self.style)
            truncated = truncated or rendered.truncated_messages > 0
            room = self.max_model_len - len(rendered.token_ids)
            if room >= max_new_tokens or not upstream or budget == 0:
                break
            budget //= 2
            truncated = True
        if room < 1:
            return None, True
        return rendered.token_ids, truncated

    @property
    def names(self) -> tuple[str, ...]:
        """The agents (adapters) this executor calls: the graph's nodes."""
        return self.topology.names

    @property
    def positions(self) -> dict[str, tuple[int, int]]:
        return self.topology.positions()

    def prompt_tokens(self, question: str) -> int | None:
        """Tokens of a first-layer node's prompt; None when it leaves no room for one new token."""
        ids, _ = self.fit_prompt(self.topology.layer_nodes(0)[0].name, question, {}, 1)
        return None if ids is None else len(ids)

    # ------------------------------------------------------------ one node call

    async def call_node(self, spec: SampleSpec, node: str, upstream: Mapping[str, str],
                        pin: Pin, policy: SamplingPolicy, route: "Route | None" = None,
                        tokens: "asyncio.Queue | None" = None) -> NodeCall:
        """One node's call; under a closed growth gate ``node`` is a small-graph node, prompted
        as such and served by (and recorded as) the large node that carries it. With
        ``tokens``, every new token id goes there as it is generated (a list per engine
        step), then None."""
        topology, serving = (route.topology, route.adapters[node]) if route else (self.topology, node)
        # the serving node's sampling: its rows are its adapter's, scored under its transforms
        policy = self.node_policy(serving, policy) if self.node_policy else policy
        prompt_ids, truncated = self.fit_prompt(node, spec.example.question, upstream, policy.max_new_tokens,
                                                topology)
        if prompt_ids is None:
            return self.calls.aborted(serving, tokens=tokens)
        # Seeded by the node's name in the graph it runs (the small one when gated), so a
        # gated sample draws what the small graph drew: sampled passes match too, not only greedy.
        return await self.calls.generate(serving, prompt_ids, pin.requests[serving], policy,
                                         spec.seed(policy.seed, node), prompt_truncated=truncated, tokens=tokens)

    # ------------------------------------------------------------ schedulers

    def route(self, spec: SampleSpec) -> Route | None:
        """The small graph this sample runs under a closed growth gate; None = the full graph."""
        gate = self.gate
        if gate is None or gate.opens(spec.step, str(spec.example.id), spec.sample_index):
            return None
        assert self._small is not None  # built with the gate
        return Route(self._small, gate.carried)

    async def run_sample(self, spec: SampleSpec, pin: Pin, policy: SamplingPolicy,
                         sink_tokens: "asyncio.Queue | None" = None) -> SampleResult:
        """Per-sample scheduling: each node starts as soon as its own inputs are done.
        ``sink_tokens``: the sink's token ids as they are generated (``call_node``)."""
        tasks: dict[str, asyncio.Task] = {}
        route = self.route(spec)
        topology = route.topology if route else self.topology

        async def run(node: str) -> NodeCall:
            inputs = topology.node(node).inputs
            done = await asyncio.gather(*(tasks[src] for src in inputs))
            upstream = {src: call.text for src, call in zip(inputs, done)}
            stream = sink_tokens if node == topology.sink else None
            return await self.call_node(spec, node, upstream, pin, policy, route, stream)

        # Topology nodes are ordered by layer, so every input's task exists before use.
        for node in topology.names:
            tasks[node] = asyncio.ensure_future(run(node))
        try:
            calls = await asyncio.gather(*tasks.values())
        finally:
            for task in tasks.values():
                task.cancel()
        return self._result(spec, pin, calls)

    def _result(self, spec: SampleSpec, pin: Pin, calls: Sequence[NodeCall]) -> SampleResult:
        """Calls in the (large) topology's order; the sink's text is the answer."""
        order = {name: i for i, name in enumerate(self.topology.names)}
        calls = sorted(calls, key=lambda c: order[c.node])
        return SampleResult(spec, pin.version, tuple(calls), calls[-1].text)

    async def stream(self, specs: Sequence[SampleSpec], acquire: Callable[[], Pin],
                     release: Callable[[Pin], Any], policy: SamplingPolicy) -> AsyncIterator[SampleResult]:
        """Yield samples as they finish; every sample pins one adapter version throughout."""
        async for result in stream_samples(self.run_sample, specs, acquire, release, policy):
            yield result
