"""``program.entry`` -> the program's function, checked before anything starts."""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable


class ProgramError(ValueError):
    """A program that cannot run at all (one line naming program.entry): the run exits 2."""


@dataclass(frozen=True)
class Program:
    entry: str  # package.module:function
    fn: Callable[..., Any]
    is_async: bool  # a coroutine function (else, under transport http, it runs in a thread)


def load_program(entry: str, transport: str = "inproc") -> Program:
    """Import ``entry`` and check it can be called as ``solve(question, client_or_base_url)``."""
    module, _, attr = entry.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr, None) if module and attr else None
    except Exception as exc:  # noqa: BLE001 - any import failure is the same one-line error
        raise ProgramError(f"program.entry={entry}: cannot import {module} ({type(exc).__name__}: {exc})") from None
    if not callable(fn):
        raise ProgramError(f"program.entry={entry}: {module} has no function {attr!r}")
    try:
        inspect.signature(fn).bind("question", None)
    except TypeError:
        raise ProgramError(f"program.entry={entry}: must take (question, client), got {attr}{_signature(fn)}") from None
    except ValueError:
        pass  # a builtin without a signature: trust it
    is_async = inspect.iscoroutinefunction(fn)
    if transport == "inproc" and not is_async:
        raise ProgramError(f"program.entry={entry}: transport inproc needs `async def {attr}(question, client)`; "
                           f"a sync program runs with program.transport=http")
    return Program(entry, fn, is_async)


def _signature(fn: Callable[..., Any]) -> str:
    try:
        return str(inspect.signature(fn))
    except ValueError:
        return "(...)"


@dataclass(frozen=True)
class ProgramShape:
    """What the driver needs of a program where a graph has its topology: the agents (the
    adapters' names); no layers, and no sink: a sample's answer is what the program returned."""

    agents: tuple[str, ...]
    sink: str = ""  # no node's text is the answer; reports read a sample's first row
    widths: tuple[int, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return self.agents
