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
import hashlib
import itertools
import time
from typing import Any, AsyncIterator, Callable, Mapping, NamedTuple, Sequence

from neuromas_dist.graph.growth import GrowthGate
from neuromas_dist.graph.prompts import PromptStyle, render_node_prompt
from neuromas_dist.graph.topology import Topology
from neuromas_dist.rollout.lora_registry import Pin

FINISH_ABORT = "abort"  # the node never ran: its prompt could not fit max_model_len


class SamplingPolicy(NamedTuple):
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int  # base seed of the run; each request's seed is derived from it


class SampleSpec(NamedTuple):
    """One pass of one question through the graph."""

    step: int  # the training step (decides a growth gate's share)
    example: Any  # tasks.Example: id, question, answer
    sample_index: int
    seed_step: int | None = None  # the step that seeds the request (None = step)


class NodeCall(NamedTuple):
    node: str
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    prompt_truncated: bool
    latency_s: float


class Route(NamedTuple):
    """A gated sample's graph: the small topology, and the large node serving each of its nodes."""

    topology: Topology
    adapters: Mapping[str, str]


class SampleResult(NamedTuple):
    spec: SampleSpec
    version: int  # the adapter version every node of this sample used
    calls: Mapping[str, NodeCall]  # node -> its call (a gated sample: only the carried nodes)


def request_seed(base_seed: int, step: int, question_id: str, sample_index: int, node: str) -> int:
    """Stable per-request seed: same run, step, sample and node -> same tokens."""
    key = f"{base_seed}|{step}|{question_id}|{sample_index}|{node}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & 0x7FFFFFFF


def sampled_logprobs(token_ids: Sequence[int], logprobs: Sequence[Mapping[int, Any]] | None) -> list[float]:
    """The logprob of each sampled token from vLLM's per-position dicts."""
    if token_ids and not logprobs:
        raise RuntimeError(f"vLLM returned {len(token_ids)} tokens without logprobs; SamplingParams.logprobs must be 0")
    return [float(pos[tok].logprob) for tok, pos in zip(token_ids, logprobs or ())]


class GraphExecutor:
    """Runs samples through ``topology`` on ``engine`` (an ``AsyncLLM`` or a fake with
    the same ``generate`` coroutine-iterator signature)."""

    def __init__(self, engine: Any, topology: Topology, tokenizer: Any, *, answer_format: str,
                 upstream_token_budget: int, max_model_len: int, gate: GrowthGate | None = None,
                 style: PromptStyle = PromptStyle()) -> None:
        self.engine = engine
        self.topology = topology
        self.gate = gate  # a grown graph fading in: some samples run the small graph
        self._small = Topology.build(gate.small) if gate is not None else None
        self.tokenizer = tokenizer
        self.answer_format = answer_format
        self.budget = upstream_token_budget
        self.style = style
        self.max_model_len = max_model_len
        self._request_ids = itertools.count()

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

    # ------------------------------------------------------------ one node call

    async def call_node(self, spec: SampleSpec, node: str, upstream: Mapping[str, str],
                        pin: Pin, policy: SamplingPolicy, route: "Route | None" = None,
                        tokens: "asyncio.Queue | None" = None) -> NodeCall:
        """One node's call; under a closed growth gate ``node`` is a small-graph node, prompted
        as such and served by (and recorded as) the large node that carries it. With
        ``tokens``, every new token id goes there as it is generated (a list per engine
        step), then None."""
        topology, serving = (route.topology, route.adapters[node]) if route else (self.topology, node)
        prompt_ids, truncated = self.fit_prompt(node, spec.example.question, upstream, policy.max_new_tokens,
                                                topology)
        if prompt_ids is None:
            if tokens is not None:
                tokens.put_nowait(None)
            return NodeCall(serving, [], [], [], "", FINISH_ABORT, True, 0.0)
        max_tokens = min(policy.max_new_tokens, self.max_model_len - len(prompt_ids))
        seed_step = spec.step if spec.seed_step is None else spec.seed_step
        # Seeded by the node's name in the graph it runs (the small one when gated), so a
        # gated sample draws what the small graph drew: sampled passes match too, not only greedy.
        params = _sampling_params(policy, max_tokens, request_seed(
            policy.seed, seed_step, str(spec.example.id), spec.sample_index, node), stream=tokens is not None)
        start = time.perf_counter()
        out = await self._generate(prompt_ids, params, pin.requests[serving], tokens)
        completion = out.outputs[0]
        token_ids = list(completion.token_ids)
        # Decode here rather than use vLLM's incremental text: the two differ on broken
        # UTF-8 fragments, and downstream prompts must be reproducible from the row's ids.
        text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return NodeCall(serving, prompt_ids, token_ids, sampled_logprobs(token_ids, completion.logprobs),
                        text, str(completion.finish_reason or FINISH_ABORT), truncated,
                        time.perf_counter() - start)

    async def _generate(self, prompt_ids: list[int], params: Any, lora_request: Any,
                        tokens: "asyncio.Queue | None" = None) -> Any:
        from vllm.inputs import TokensPrompt

        final, sent = None, 0
        request_id = f"n{next(self._request_ids)}"
        try:
            async for final in self.engine.generate(TokensPrompt(prompt_token_ids=prompt_ids), params,
                                                    request_id, lora_request=lora_request):
                if tokens is not None:
                    ids = final.outputs[0].token_ids
                    if len(ids) > sent:
                        tokens.put_nowait(list(ids[sent:]))
                        sent = len(ids)
        finally:
            if tokens is not None:
                tokens.put_nowait(None)
        return final

    # ------------------------------------------------------------ schedulers

    def route(self, spec: SampleSpec) -> Route | None:
        """The small graph this sample runs under a closed growth gate; None = the full graph."""
        gate = self.gate
        if gate is None or gate.opens(spec.step, str(spec.example.id), spec.sample_index):
            return None
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
        return SampleResult(spec, pin.version, {c.node: c for c in calls})

    async def run_layered(self, specs: Sequence[SampleSpec], pins: Sequence[Pin],
                          policy: SamplingPolicy) -> list[SampleResult]:
        """Layer-barrier scheduling: layer l of all samples, then layer l+1."""
        if self.gate is not None:
            raise ValueError("a growth gate needs rollout.scheduling=per_sample")
        calls: list[dict[str, NodeCall]] = [{} for _ in specs]
        for layer in range(self.topology.num_layers):
            jobs = [(i, n.name) for i in range(len(specs)) for n in self.topology.layer_nodes(layer)]
            results = await asyncio.gather(*(
                self.call_node(specs[i], node, _upstream(self.topology, node, calls[i]), pins[i], policy)
                for i, node in jobs))
            for (i, node), call in zip(jobs, results):
                calls[i][node] = call
        return [SampleResult(spec, pin.version, c) for spec, pin, c in zip(specs, pins, calls)]

    async def stream(self, specs: Sequence[SampleSpec], acquire: Callable[[], Pin],
                     release: Callable[[Pin], Any], policy: SamplingPolicy, scheduling: str
                     ) -> AsyncIterator[SampleResult]:
        """Yield samples as they finish; every sample pins one adapter version throughout."""
        if scheduling == "layer":
            pins = [acquire() for _ in specs]
            try:
                results = await self.run_layered(specs, pins, policy)
            finally:
                for pin in pins:
                    release(pin)
            for result in results:
                yield result
            return
        async for result in self._stream_per_sample(specs, acquire, release, policy):
            yield result

    async def _stream_per_sample(self, specs, acquire, release, policy) -> AsyncIterator[SampleResult]:
        async def one(spec: SampleSpec) -> SampleResult:
            pin = acquire()
            try:
                return await self.run_sample(spec, pin, policy)
            finally:
                release(pin)

        tasks = [asyncio.ensure_future(one(spec)) for spec in specs]
        try:
            for next_done in asyncio.as_completed(tasks):
                yield await next_done
        finally:
            for task in tasks:
                task.cancel()


def _upstream(topology: Topology, node: str, calls: Mapping[str, NodeCall]) -> dict[str, str]:
    return {src: calls[src].text for src in topology.node(node).inputs}


def _sampling_params(policy: SamplingPolicy, max_tokens: int, seed: int, stream: bool = False) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        temperature=policy.temperature,
        top_p=policy.top_p,
        max_tokens=max_tokens,
        logprobs=0,  # 0 = only the sampled token's logprob
        seed=None if policy.temperature == 0 else seed,
        # no per-token deltas (less IPC), unless a caller streams the tokens: then all ids so far
        output_kind=RequestOutputKind.CUMULATIVE if stream else RequestOutputKind.FINAL_ONLY,
        detokenize=False,  # the executor decodes the final ids itself
    )
