"""A rollout worker's adapters inside its vLLM engine: hot swaps without a pause.

Each version is written once to a scratch directory (RAM-backed ``/dev/shm`` where there
is one), registered under fresh LoRA ids (``LoraRegistry``) and preloaded into the engine.
Samples pin the version current when they start; a replaced version leaves the engine,
and its files the scratch directory, when its last sample ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import psutil

from neuromas_dist.adapters.peft_io import AdapterSet, write_adapter_set, write_peft_dir
from neuromas_dist.rollout.lora_registry import LoraRegistry, Pin, Retired

SCRATCH_PREFIX = "neuromas_rollout_p"


def scratch_root() -> str | None:
    # Adapter files are read once per load: RAM-backed /dev/shm avoids disk when present.
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and shm.stat().st_mode & 0o222 else None


def remove_orphaned_scratch(root: str | None) -> None:
    """Adapter scratch dirs of worker processes that died without shutdown (SIGKILL, OOM):
    in /dev/shm they would hold RAM for good."""
    for path in Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*_*"):
        pid = path.name.split("_")[2][1:]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


class AdapterSlots:
    """The versions of every node's adapter an engine holds. ``engine`` is bound once the
    worker has started it."""

    def __init__(self, first_lora_id: int = 1) -> None:
        remove_orphaned_scratch(scratch_root())
        self.root = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}_", dir=scratch_root()))
        self.registry = LoraRegistry(first_id=first_lora_id)
        self.engine: Any = None
        self.versions_retired = 0
        self.held: AdapterSet | None = None  # the current version's tensors (an ablation zeroes one node's)
        self._drops: set[asyncio.Task] = set()

    @property
    def version(self) -> int | None:
        return self.registry.current_version

    async def install(self, adapters: AdapterSet) -> float:
        """``adapters`` under fresh LoRA ids, preloaded so the first request does not stall;
        the version it replaces goes once unpinned. Returns the seconds it took."""
        t0 = time.perf_counter()
        directory = self.root / f"v{adapters.version}"
        paths = {node: str(p) for node, p in write_adapter_set(directory, adapters).items()}
        self.held = adapters
        pin, retired = self.registry.install(adapters.version, paths, directory)
        for request in pin.requests.values():
            await self.engine.add_lora(request)
        await self._drop(retired)
        return time.perf_counter() - t0

    def acquire(self) -> Pin:
        return self.registry.acquire()

    @contextlib.asynccontextmanager
    async def ablating(self, node: str) -> AsyncIterator[Callable[[], Pin]]:
        """``acquire`` for one pass with ``node``'s LoRA B zeroed (A kept: the adapter adds exactly
        0, the node runs as the base model) under a one-off id, dropped when the block ends: the
        installed versions never change, so a pass after the block is the full graph's.
        (Leaving the node's request out would not do: vLLM's CPU LoRA ops index the adapter
        slots with -1 for a request without one, i.e. serve it the last slot's adapter.)"""
        if self.held is None or node not in self.held.tensors:
            raise ValueError(f"cannot ablate {node}: no adapter of that node is installed")
        zero = {k: (v.new_zeros(v.shape) if ".lora_B." in k else v) for k, v in self.held.tensors[node].items()}
        directory = self.root / f"ablated_{node}_{uuid.uuid4().hex[:8]}"
        request = self.registry.one_off(f"{node}@ablated", str(write_peft_dir(directory, zero, self.held.peft_config)))
        await self.engine.add_lora(request)

        def acquire() -> Pin:
            pin = self.registry.acquire()
            return pin._replace(requests={**pin.requests, node: request})

        try:
            yield acquire
        finally:
            await self.engine.remove_lora(request.lora_int_id)
            shutil.rmtree(directory, ignore_errors=True)

    def release(self, pin: Pin) -> None:
        retired = self.registry.release(pin)
        if retired:
            # release runs inside the executor's sync callback: drop the ids in a task.
            task = asyncio.ensure_future(self._drop(retired))
            self._drops.add(task)
            task.add_done_callback(self._drops.discard)

    async def _drop(self, retired: list[Retired]) -> None:
        for old in retired:
            for lora_id in old.lora_ids:
                await self.engine.remove_lora(lora_id)
            if old.directory is not None:
                shutil.rmtree(old.directory, ignore_errors=True)
            self.versions_retired += 1

    def stats(self) -> dict[str, float]:
        live = self.registry.live_versions()
        return {"rollout/adapter_versions_retired": float(self.versions_retired),
                "rollout/live_adapter_versions": len(live),
                "rollout/pinned_samples": sum(self.registry.refs(v) for v in live)}

    async def handover(self) -> AdapterSlots:
        """Empty slots on this engine for another run: every adapter leaves it and its prefix cache
        empties, so it holds what a fresh engine would, and the new slots' LoRA ids continue after
        these (nothing vLLM keeps by id can serve the old weights). Refused while a sample pins a
        version (a run that stopped mid-step)."""
        if any(self.registry.refs(v) for v in self.registry.live_versions()):
            raise RuntimeError("samples of the last run still pin its adapters")
        if self.engine is not None:
            for lora_id in await self.engine.list_loras():
                await self.engine.remove_lora(lora_id)
            await self.engine.reset_prefix_cache()
        self.close()
        return AdapterSlots(first_lora_id=self.registry.next_id())

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
