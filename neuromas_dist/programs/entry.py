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


def import_function(key: str, spec: str, error: type[ValueError]) -> Callable[..., Any]:
    """``package.module:function``, named by config key ``key``, as the function; ``error`` (one
    line naming the key) when it is not one. The program entry and a reward function load so."""
    module, _, attr = spec.partition(":")
    if not (module and attr):
        raise error(f"{key}={spec}: not a function; write package.module:function")
    try:
        fn = getattr(importlib.import_module(module), attr, None)
    except Exception as exc:  # noqa: BLE001 - any import failure is the same one-line error
        raise error(f"{key}={spec}: cannot import {module} ({type(exc).__name__}: {exc})") from None
    if fn is None:
        raise error(f"{key}={spec}: {module} has no function {attr!r}")
    if not callable(fn):
        raise error(f"{key}={spec}: {module}.{attr} is not a function")
    return fn


def load_program(entry: str, transport: str = "inproc") -> Program:
    """Import ``entry`` and check it can be called as ``solve(question, client_or_base_url)``."""
    fn = import_function("program.entry", entry, ProgramError)
    attr = entry.partition(":")[2]
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
