"""LoRA version registry: fresh ids per version, pins, retirement once drained."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from neuromas_dist.rollout.lora_registry import LoraRegistry


def _registry() -> LoraRegistry:
    return LoraRegistry(lambda name, i, path: SimpleNamespace(lora_name=name, lora_int_id=i, lora_path=path))


def test_each_version_gets_fresh_ids():
    reg = _registry()
    v0, retired = reg.install(0, {"L0N0": "/a0", "L1N0": "/b0"})
    assert retired == []
    v1, retired = reg.install(1, {"L0N0": "/a1", "L1N0": "/b1"})
    ids0 = {r.lora_int_id for r in v0.requests.values()}
    ids1 = {r.lora_int_id for r in v1.requests.values()}
    assert not ids0 & ids1 and min(ids0 | ids1) >= 1
    assert [r.version for r in retired] == [0] and set(retired[0].lora_ids) == ids0
    assert reg.live_ids() == ids1
    assert v1.requests["L0N0"].lora_name == "L0N0@v1"


def test_pinned_version_survives_swap_until_released():
    reg = _registry()
    reg.install(0, {"L0N0": "/a0"}, directory="/dir0")
    pin_a, pin_b = reg.acquire(), reg.acquire()
    _, retired = reg.install(1, {"L0N0": "/a1"})
    assert retired == [] and reg.live_versions() == [0, 1]
    new_pin = reg.acquire()
    assert new_pin.version == 1 and pin_a.version == 0
    assert reg.release(pin_a) == []
    retired = reg.release(pin_b)
    assert [(r.version, r.directory) for r in retired] == [(0, "/dir0")]
    assert reg.release(new_pin) == [], "the current version is never retired"
    assert reg.live_versions() == [1]


def test_misuse_is_loud():
    reg = _registry()
    with pytest.raises(RuntimeError):
        reg.acquire()
    reg.install(3, {"L0N0": "/a"})
    with pytest.raises(ValueError):
        reg.install(3, {"L0N0": "/b"})
    pin = reg.acquire()
    reg.release(pin)
    with pytest.raises(RuntimeError):
        reg.release(pin)


def test_a_handover_empties_the_engine_and_never_reuses_an_id():
    """AdapterSlots.handover (a worker kept warm for another run): refused while a sample pins a
    version; then every LoRA leaves the engine, its prefix cache empties, and the next slots'
    ids start after every id the engine saw."""
    import asyncio

    from neuromas_dist.rollout.adapter_slots import AdapterSlots

    class Engine:
        def __init__(self):
            self.loras, self.resets = {3, 4}, 0

        async def list_loras(self):
            return set(self.loras)

        async def remove_lora(self, lora_id):
            self.loras.discard(lora_id)

        async def reset_prefix_cache(self):
            self.resets += 1

    slots = AdapterSlots()
    slots.registry, slots.engine = _registry(), Engine()
    slots.registry.install(0, {"L0N0": "/a0", "L1N0": "/b0"})
    pin = slots.acquire()
    with pytest.raises(RuntimeError, match="still pin"):
        asyncio.run(slots.handover())
    slots.registry.release(pin)
    fresh = asyncio.run(slots.handover())
    assert slots.engine.loras == set() and slots.engine.resets == 1 and not slots.root.exists()
    assert fresh.registry.next_id() > max(pin.requests[n].lora_int_id for n in pin.requests)
    fresh.close()
