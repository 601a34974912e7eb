"""Graph execution logic against a fake engine: scheduling order, upstream wiring,
seeds, prompt fitting, batching and bad-output scoring. The real vLLM path is tested
in test_worker_engine.py; these fakes only make timing and wiring deterministic."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from benchmarks.rollout_throughput import layer_barrier
from neuromas_dist.graph.topology import Topology
from neuromas_dist.rollout.calls import EngineCalls
from neuromas_dist.rollout.executor import GraphExecutor, SampleSpec, SamplingPolicy, request_seed
from neuromas_dist.rollout.lora_registry import LoraRegistry
from neuromas_dist.rollout.rows import call_flags, sample_rows, score_text
from neuromas_dist.rollout.worker import _grouped
from neuromas_dist.tasks import Example, synthetic_task


class CharTokenizer:
    """One token per character; no chat template (prompts.py then appends a newline)."""

    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=False):
        return "".join(map(chr, ids))


class FakeEngine:
    """Answers "out:<node>:<sample>" after a per-(node, sample) delay; logs start/end."""

    def __init__(self, delays=None):
        self.delays = delays or {}
        self.log = []  # (event, node, sample, time)
        self.prompts = {}
        self.params = {}  # (sample, node) -> the SamplingParams of its request

    async def generate(self, prompt, params, request_id, lora_request=None):
        node = lora_request.lora_name.split("@")[0]
        text_prompt = "".join(map(chr, prompt["prompt_token_ids"]))
        sample = text_prompt.split("Question: ")[1].split("\n")[0]
        self.prompts[(sample, node)] = text_prompt
        self.params[(sample, node)] = params
        self.log.append(("start", node, sample, time.monotonic()))
        await asyncio.sleep(self.delays.get((node, sample), 0.01))
        self.log.append(("end", node, sample, time.monotonic()))
        text = f"out:{node}:{sample}"
        ids = [ord(c) for c in text][: params.max_tokens]
        logprobs = [{t: SimpleNamespace(logprob=-0.5)} for t in ids]
        finish = "length" if len(ids) < len(text) else "stop"
        yield SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, text="".join(map(chr, ids)),
                                                       logprobs=logprobs, finish_reason=finish)])


def _setup(widths, delays=None, max_model_len=4096, budget=64):
    topo = Topology.build(widths)
    engine = FakeEngine(delays)
    ex = GraphExecutor(EngineCalls(engine, CharTokenizer(), max_model_len), topo, answer_format="Say N.",
                       upstream_token_budget=budget)
    reg = LoraRegistry(lambda name, i, path: SimpleNamespace(lora_name=name, lora_int_id=i))
    reg.install(0, {n: f"/{n}" for n in topo.names})
    return topo, engine, ex, reg


def _specs(n):
    return [SampleSpec(1, Example(f"s{i}", f"s{i}", "0"), 0) for i in range(n)]


def _run(ex, reg, specs, scheduling="per_sample", max_new=64):
    """``scheduling="layer"``: the barrier per layer the throughput benchmark builds to compare with."""
    policy = SamplingPolicy(1.0, 1.0, max_new, 0)
    stream = layer_barrier(ex) if scheduling == "layer" else ex.stream

    async def go():
        return [r async for r in stream(specs, reg.acquire, reg.release, policy)]

    return asyncio.run(go())


def _start(engine, node, sample):
    return next(t for ev, n, s, t in engine.log if ev == "start" and n == node and s == sample)


def _end(engine, node, sample):
    return next(t for ev, n, s, t in engine.log if ev == "end" and n == node and s == sample)


def test_per_sample_scheduling_does_not_wait_for_a_slow_sample():
    topo, engine, ex, reg = _setup((2, 1), delays={("L0N0", "s0"): 0.4})
    results = _run(ex, reg, _specs(3), "per_sample")
    assert _end(engine, "L1N0", "s1") < _end(engine, "L0N0", "s0")
    assert results[-1].spec.example.id == "s0", "samples are yielded in completion order"
    # within a sample, a node starts only after all its inputs are done
    assert _start(engine, "L1N0", "s0") >= _end(engine, "L0N0", "s0")
    assert reg.refs(0) == 0


def test_layer_scheduling_is_a_barrier():
    topo, engine, ex, reg = _setup((2, 1), delays={("L0N0", "s0"): 0.2})
    _run(ex, reg, _specs(3), "layer")
    assert _start(engine, "L1N0", "s1") >= _end(engine, "L0N0", "s0")


@pytest.mark.parametrize("scheduling", ["per_sample", "layer"])
def test_each_node_reads_exactly_its_upstream_outputs(scheduling):
    topo = Topology.build((2, 2, 1), edges=["L0N0->L1N0", "L0N1->L1N1", "L0N0->L1N1", "L1N0->L2N0",
                                            "L1N1->L2N0", "L0N1->L2N0"])
    engine = FakeEngine()
    ex = GraphExecutor(EngineCalls(engine, CharTokenizer(), 4096), topo, answer_format="Say N.",
                       upstream_token_budget=64)
    reg = LoraRegistry(lambda name, i, path: SimpleNamespace(lora_name=name, lora_int_id=i))
    reg.install(0, {n: "/" for n in topo.names})
    results = _run(ex, reg, _specs(2), scheduling)
    for result in results:
        sample = result.spec.example.id
        for node in topo.nodes:
            prompt = engine.prompts[(sample, node.name)]
            seen = {n for n in topo.names if f"out:{n}:{sample}" in prompt}
            assert seen == set(node.inputs), (node.name, prompt)
            assert result.by_agent()[node.name].text == f"out:{node.name}:{sample}"


def test_a_node_samples_with_its_own_sampling_per_node_settings():
    """sampling.per_node reaches the node's requests (and only its): temperature, top-p and
    the token cap; an evaluation pass stays greedy for every node."""
    import dataclasses

    from neuromas_dist.config import AgentSampling, Config
    from neuromas_dist.rollout.worker import graph_executor

    cfg = Config()
    cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(
        cfg.sampling, per_node=(AgentSampling("L1N0", temperature=0.5, top_p=0.8, max_new_tokens=5),))).validate()
    topo, engine = Topology.build((2, 1)), FakeEngine()
    ex = graph_executor(cfg, EngineCalls(engine, CharTokenizer(), 4096), topo, synthetic_task("arith"), None)
    reg = LoraRegistry(lambda name, i, path: SimpleNamespace(lora_name=name, lora_int_id=i))
    reg.install(0, {n: "/" for n in topo.names})
    result = _run(ex, reg, _specs(1), "per_sample", max_new=cfg.sampling.max_new_tokens)[0]
    sink, first = engine.params[("s0", "L1N0")], engine.params[("s0", "L0N0")]
    assert (sink.temperature, sink.top_p, sink.max_tokens) == (0.5, 0.8, 5)
    assert (first.temperature, first.top_p, first.max_tokens) == (1.0, 1.0, cfg.sampling.max_new_tokens)
    assert result.by_agent()["L1N0"].text == "out:L"  # cut at its own 5 tokens

    async def greedy():
        policy = SamplingPolicy(0.0, 1.0, cfg.sampling.max_new_tokens, 0)
        return [r async for r in ex.stream(_specs(1), reg.acquire, reg.release, policy)]

    asyncio.run(greedy())
    assert engine.params[("s0", "L1N0")].temperature == 0.0


def test_overlong_prompt_cuts_upstream_harder_then_aborts_cleanly():
    topo, engine, ex, reg = _setup((2, 1), max_model_len=260, budget=64)
    upstream = {"L0N0": "x" * 200, "L0N1": "y" * 200}
    ids, truncated = ex.fit_prompt("L1N0", "s0", upstream, max_new_tokens=16)
    assert truncated and ids is not None and len(ids) + 16 <= 260
    ids, truncated = ex.fit_prompt("L1N0", "q" * 400, upstream, max_new_tokens=16)
    assert ids is None and truncated
    # the whole rollout still completes: nodes that cannot fit are aborted, never raised
    long = [SampleSpec(1, Example("s0", "s0" + "q" * 400, "0"), 0)]
    (result,) = _run(ex, reg, long, "per_sample")
    assert {c.finish_reason for c in result.calls} == {"abort"}
    assert call_flags(result)["rollout/flag_aborted"] == 3


def test_request_seeds_are_stable_and_distinct():
    a = request_seed(0, 3, "q1", 0, "L0N0")
    assert a == request_seed(0, 3, "q1", 0, "L0N0")
    others = {request_seed(0, 3, "q1", 0, "L0N1"), request_seed(0, 4, "q1", 0, "L0N0"),
              request_seed(0, 3, "q1", 1, "L0N0"), request_seed(1, 3, "q1", 0, "L0N0")}
    assert a not in others and len(others) == 4 and all(0 <= s < 2**31 for s in others | {a})


def test_bad_output_is_scored_zero_and_flagged():
    task = synthetic_task("arith")
    ex = Example("q", "What?", "7")
    empty = score_text(task, "", ex)
    assert empty.reward == 0.0 and empty.parsed is None
    assert empty.flags["rollout/flag_empty"] == 1 and empty.flags["rollout/flag_unparsable"] == 1
    assert score_text(task, "The answer is 7.", ex).reward == task.score("The answer is 7.", ex).reward == 1.0

    class Broken:
        def score(self, text, example):
            raise RuntimeError("checker bug")

    broken = score_text(Broken(), "The answer is 7.", ex)
    assert broken.reward == 0.0 and broken.flags["rollout/flag_score_error"] == 1

    for bad in (float("nan"), float("inf"), -float("inf")):
        class NonFinite:  # a custom reward function gone wrong: scored as a wrong answer, counted
            def score(self, text, example, bad=bad):
                return SimpleNamespace(reward=bad, parsed="7")

        scored = score_text(NonFinite(), "The answer is 7.", ex)
        assert scored.reward == 0.0 and scored.flags["rollout/flag_nonfinite_reward"] == 1


def test_cut_responses_are_flagged_and_rows_share_the_reward():
    topo, engine, ex, reg = _setup((2, 1))
    (result,) = _run(ex, reg, _specs(1), "per_sample", max_new=4)
    assert call_flags(result)["rollout/flag_cut"] == 3
    scored = score_text(synthetic_task("arith"), result.by_agent()["L1N0"].text, result.spec.example)
    rows = sample_rows(result, scored, topo.positions(), worker_id=2)
    assert [r.node for r in rows] == ["L0N0", "L0N1", "L1N0"]
    assert {r.reward for r in rows} == {0.0} and all(r.response_truncated for r in rows)
    assert {r.sample_id for r in rows} == {"s0#0"} and {r.worker_id for r in rows} == {2}


def test_grouping_flushes_by_count_and_by_time():
    async def results(delays):
        for i, d in enumerate(delays):
            await asyncio.sleep(d)
            yield i

    async def collect(delays, every, seconds):
        return [g async for g in _grouped(results(delays), every, seconds)]

    assert asyncio.run(collect([0] * 7, 3, 10.0)) == [[0, 1, 2], [3, 4, 5], [6]]
    # the 0.3 s gap passes the 0.1 s deadline, so sample 0 goes out alone
    assert asyncio.run(collect([0, 0.3, 0], 10, 0.1))[0] == [0]


# ---------------------------------------------------------------- growth gate

from neuromas_dist.graph.growth import GrowthGate  # noqa: E402


def _gated(fade_steps):
    large, small = Topology.build((4, 2, 1)), Topology.build((2, 1))
    engine = FakeEngine()
    gate = GrowthGate.build(small, large, start_step=0, fade_steps=fade_steps, seed=0)
    ex = GraphExecutor(EngineCalls(engine, CharTokenizer(), 4096), large, answer_format="Say N.",
                       upstream_token_budget=64, gate=gate)
    reg = LoraRegistry(lambda name, i, path: SimpleNamespace(lora_name=name, lora_int_id=i))
    reg.install(0, {n: f"/{n}" for n in large.names})
    return large, small, engine, ex, reg


def test_closed_gate_runs_the_small_graph_on_the_carried_adapters():
    large, small, engine, ex, reg = _gated(fade_steps=5)
    specs = [SampleSpec(0, Example(f"s{i}", f"s{i}", "0"), 0) for i in range(2)]  # step 0: share 0
    results = _run(ex, reg, specs, "per_sample")
    _, small_engine, small_ex, small_reg = _setup((2, 1))
    _run(small_ex, small_reg, specs, "per_sample")
    for result in results:
        sample = result.spec.example.id
        assert set(result.by_agent()) == {"L1N0", "L1N1", "L2N0"}, "only the carried nodes run"
        for small_node, large_node in {"L0N0": "L1N0", "L0N1": "L1N1", "L1N0": "L2N0"}.items():
            # served by the large node's adapter, prompted exactly as the small graph's node
            # (the fake engine names its text after the adapter, hence the renaming)
            expected = small_engine.prompts[(sample, small_node)]
            expected = expected.replace("out:L0N0:", "out:L1N0:").replace("out:L0N1:", "out:L1N1:")
            assert engine.prompts[(sample, large_node)] == expected
        rows = sample_rows(result, score_text(synthetic_task("arith"), "The answer is 0.", result.spec.example),
                           large.positions(), 0)
        assert [r.node for r in rows] == ["L1N0", "L1N1", "L2N0"]
        assert [r.layer for r in rows] == [1, 1, 2]


def test_open_gate_runs_the_large_graph():
    large, _, engine, ex, reg = _gated(fade_steps=5)
    specs = [SampleSpec(5, Example(f"s{i}", f"s{i}", "0"), 0) for i in range(2)]  # share 1 from step 5
    for result in _run(ex, reg, specs, "per_sample"):
        assert set(result.by_agent()) == set(large.names)
        assert "layer 3 of 3" in engine.prompts[(result.spec.example.id, "L2N0")]


def test_half_open_gate_routes_each_sample_by_its_draw():
    large, _, engine, ex, reg = _gated(fade_steps=2)
    specs = [SampleSpec(1, Example(f"s{i}", f"s{i}", "0"), k) for i in range(8) for k in range(2)]  # share 1/2
    opened = [ex.gate.opens(1, s.example.id, s.sample_index) for s in specs]
    assert 0 < sum(opened) < len(specs)
    by_sample = {(r.spec.example.id, r.spec.sample_index): r for r in _run(ex, reg, specs, "per_sample")}
    for spec, is_open in zip(specs, opened):
        ran = set(by_sample[(spec.example.id, spec.sample_index)].by_agent())
        assert ran == (set(large.names) if is_open else {"L1N0", "L1N1", "L2N0"})


def test_seed_step_seeds_the_request_instead_of_the_step():
    engine_seeds = []

    class SeedEngine(FakeEngine):
        async def generate(self, prompt, params, request_id, lora_request=None):
            engine_seeds.append(params.seed)
            async for out in super().generate(prompt, params, request_id, lora_request):
                yield out

    topo = Topology.build((1,))
    ex = GraphExecutor(EngineCalls(SeedEngine(), CharTokenizer(), 4096), topo, answer_format="Say N.",
                       upstream_token_budget=64)
    reg = LoraRegistry(lambda name, i, path: SimpleNamespace(lora_name=name, lora_int_id=i))
    reg.install(0, {"L0N0": "/"})
    ex_q = Example("q", "q", "0")
    _run(ex, reg, [SampleSpec(7, ex_q, 2, -1), SampleSpec(-1, ex_q, 2), SampleSpec(7, ex_q, 2)])
    assert engine_seeds[0] == engine_seeds[1] == request_seed(0, -1, "q", 2, "L0N0")
    assert engine_seeds[2] == request_seed(0, 7, "q", 2, "L0N0") != engine_seeds[0]
