"""Versioned node adapters -> vLLM ``LoRARequest`` objects, with reference counts.

Every installed version gets fresh integer LoRA ids: vLLM caches adapters by id, so
reusing an id for new weights could serve stale ones. A sample *pins* the current
version when it starts and uses that version's requests for all its nodes, so one
sample never mixes versions. A version that is no longer current is *retired* (its ids
handed back for ``remove_lora``) only once its last pin is released.

Pure bookkeeping: the worker performs the engine calls for what this returns.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple


class Pin(NamedTuple):
    """What a sample holds while it runs: one version and its per-node requests."""

    version: int
    requests: Mapping[str, Any]  # node -> LoRARequest


class Retired(NamedTuple):
    """A version whose adapters the engine may now drop."""

    version: int
    lora_ids: tuple[int, ...]
    directory: Any  # where its PEFT dirs were written (deleted by the worker), or None


@dataclass
class _Entry:
    version: int
    requests: dict[str, Any]
    directory: Any
    refs: int = 0
    lora_ids: tuple[int, ...] = field(default=())


def _make_request(name: str, lora_id: int, path: str) -> Any:
    from vllm.lora.request import LoRARequest

    return LoRARequest(name, lora_id, path)


class LoraRegistry:
    """Adapter versions, their LoRA ids and how many running samples pin each."""

    def __init__(self, make_request: Callable[[str, int, str], Any] = _make_request, first_id: int = 1) -> None:
        self._make_request = make_request
        self._ids = itertools.count(first_id)  # vLLM rejects id 0
        self._entries: dict[int, _Entry] = {}
        self._current: int | None = None

    @property
    def current_version(self) -> int | None:
        return self._current

    def next_id(self) -> int:
        """The first LoRA id this registry has not handed out (it never will: it is used up)."""
        return next(self._ids)

    def one_off(self, name: str, path: str) -> Any:
        """A request outside the versions (an ablated node for one pass), under a fresh id."""
        return self._make_request(name, next(self._ids), path)

    def install(self, version: int, paths: Mapping[str, str], directory: Any = None
                ) -> tuple[Pin, list[Retired]]:
        """Make ``version`` current (node -> PEFT dir); returns its pin-free view and
        the versions that can be dropped right away (no sample pins them)."""
        if self._current is not None and version <= self._current:
            raise ValueError(f"adapter version {version} is not newer than the loaded {self._current}")
        requests, ids = {}, []
        for node in sorted(paths):
            lora_id = next(self._ids)
            requests[node] = self._make_request(f"{node}@v{version}", lora_id, str(paths[node]))
            ids.append(lora_id)
        self._entries[version] = _Entry(version, requests, directory, lora_ids=tuple(ids))
        previous, self._current = self._current, version
        retired = [] if previous is None else self._retire_if_idle(previous)
        return Pin(version, dict(requests)), retired

    def acquire(self) -> Pin:
        """Pin the current version for one sample."""
        if self._current is None:
            raise RuntimeError("no adapters loaded: call install() first")
        entry = self._entries[self._current]
        entry.refs += 1
        return Pin(entry.version, dict(entry.requests))

    def release(self, pin: Pin) -> list[Retired]:
        """Unpin; returns the version for removal if it was the last user of an old one."""
        entry = self._entries.get(pin.version)
        if entry is None or entry.refs <= 0:
            raise RuntimeError(f"release of version {pin.version} without a matching acquire")
        entry.refs -= 1
        return self._retire_if_idle(pin.version)

    def _retire_if_idle(self, version: int) -> list[Retired]:
        entry = self._entries[version]
        if version == self._current or entry.refs > 0:
            return []
        del self._entries[version]
        return [Retired(version, entry.lora_ids, entry.directory)]

    def refs(self, version: int) -> int:
        entry = self._entries.get(version)
        return 0 if entry is None else entry.refs

    def live_versions(self) -> list[int]:
        return sorted(self._entries)

    def live_ids(self) -> set[int]:
        return {i for e in self._entries.values() for i in e.lora_ids}
