"""benchmarks.balance: the engine-per-node layout's routing, and the summary's ratios
against numbers worked out by hand. (The layouts run on real vLLM engines in the
benchmark itself; here recording engines stand in to check where each call goes.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from benchmarks.balance import EnginePerNode, summarize


class Recording:
    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    async def add_lora(self, request):
        self.calls.append((self.name, "add", request.lora_int_id))
        return True

    async def remove_lora(self, lora_id):
        self.calls.append((self.name, "remove", lora_id))
        return True

    def generate(self, prompt, params, request_id, lora_request=None):
        self.calls.append((self.name, "generate", request_id))
        return self.name

    async def reset_prefix_cache(self):
        self.calls.append((self.name, "reset", None))

    def shutdown(self):
        self.calls.append((self.name, "shutdown", None))


def test_engine_per_node_sends_each_call_to_its_nodes_engine():
    calls: list = []
    engines = EnginePerNode({n: Recording(n, calls) for n in ("L0N0", "L0N1", "L1N0")})
    a, b = SimpleNamespace(lora_name="L0N1@v3", lora_int_id=7), SimpleNamespace(lora_name="L1N0@v3", lora_int_id=8)

    async def go():
        await engines.add_lora(a)
        await engines.add_lora(b)
        assert engines.generate("p", None, "r1", lora_request=b) == "L1N0"
        await engines.remove_lora(7)  # only the id is given: the engine that holds it drops it
        await engines.reset_prefix_cache()

    asyncio.run(go())
    engines.shutdown()
    assert calls[:4] == [("L0N1", "add", 7), ("L1N0", "add", 8), ("L1N0", "generate", "r1"), ("L0N1", "remove", 7)]
    assert sorted(c[0] for c in calls[4:7]) == ["L0N0", "L0N1", "L1N0"] and {c[1] for c in calls[4:7]} == {"reset"}
    assert len([c for c in calls if c[1] == "shutdown"]) == 3


def test_summary_ratios_by_hand():
    transfer = {"paper_bytes_ratio": 86.6, "paper_seconds_ratio": 40.0}
    apart = {1: {"rollout_s": 4.0, "learn_s": 2.0, "sync_s": 0.5, "rollout_tokens_per_s_per_worker": 1000.0,
                 "learner_tokens_per_s_per_rank": 9000.0, "workers_per_rank_to_balance": 2.0, "transfer": transfer},
             2: {"rollout_s": 2.5}}
    system = {"sync": {"step_s": 5.2}, "async": {"step_s": 4.6}}
    layout = {"one_engine_all_adapters": {"tokens_per_s": 600.0, "engine_memory_gib": 2.0},
              "per_node": {"tokens_per_s": 300.0, "engine_memory_gib": 6.0}}
    s = summarize(apart, system, layout)
    assert s["sync_step_over_serial"] == pytest.approx(5.2 / 6.5)  # 4 + 2 + 0.5
    assert s["async_step_over_max"] == pytest.approx(4.6 / 4.0)
    assert s["two_workers_rollout_speedup"] == pytest.approx(1.6)
    assert s["layouts_tokens_per_s_vs_ours"]["per_node"] == pytest.approx(0.5)
    assert s["layouts_memory_vs_ours"]["per_node"] == pytest.approx(3.0)
