"""Running a program for every sample on the worker's one engine.

Each sample is its own asyncio task (``rollout.executor.stream_samples``, as for the
graph), so all agents' calls of all samples reach the engine together and vLLM batches
them across adapters. A program that fails (raises, returns a non-string, makes a call it
may not, runs past ``program.timeout_s``) ends its sample with a flag; the sample scores 0
and its finished calls are still rows, so the agents learn what led there.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

from neuromas_dist.config import Config
from neuromas_dist.graph.prompts import chat_text, encode
from neuromas_dist.programs.entry import Program
from neuromas_dist.rollout.calls import EngineCalls, SamplingPolicy, node_policy
from neuromas_dist.rollout.executor import SampleResult, SampleSpec, stream_samples
from neuromas_dist.rollout.lora_registry import Pin
from neuromas_dist.rollout.program.client import ProgramClient
from neuromas_dist.rollout.program.episode import FAULT, Episode, ProgramFault

_WARNED: set[tuple[str, str]] = set()


def agent_policies(cfg: Config, run: SamplingPolicy) -> dict[str, SamplingPolicy]:
    """Each agent's sampling over the pass's ``run`` policy (``calls.node_policy``)."""
    return {agent: node_policy(cfg, agent, run) for agent in cfg.program.agents}


class ProgramExecutor:
    """Runs ``program`` for each sample, every call through ``calls``."""

    def __init__(self, calls: EngineCalls, program: Program, cfg: Config, endpoint: Any = None) -> None:
        self.calls = calls
        self.program = program
        self.cfg = cfg
        self.enable_thinking = cfg.prompts.enable_thinking
        self.endpoint = endpoint  # http.LoopbackEndpoint when program.transport is http
        self._threads: ThreadPoolExecutor | None = None  # a sync program's runs, one thread each

    @property
    def names(self) -> tuple[str, ...]:
        """The agents (adapters) the program calls."""
        return self.cfg.program.agents

    @property
    def positions(self) -> Mapping[str, tuple[int, int]]:
        """A program's agents as rows place them: layer 0, their index in ``program.agents``."""
        return {name: (0, i) for i, name in enumerate(self.cfg.program.agents)}

    def prompt_tokens(self, question: str) -> int | None:
        """Tokens of ``question`` as one user message; None when it leaves no room for one new token."""
        n = len(encode(self.calls.tokenizer, chat_text(self.calls.tokenizer, [{"role": "user", "content": question}],
                                                       self.enable_thinking)))
        return n if n < self.calls.max_model_len else None

    async def run_sample(self, spec: SampleSpec, pin: Pin, policy: SamplingPolicy,
                         sink_tokens: asyncio.Queue | None = None) -> SampleResult:
        episode = Episode(spec, pin, agent_policies(self.cfg, policy), self.calls,
                          max_calls=self.cfg.program.max_calls, enable_thinking=self.enable_thinking)
        answer = ""
        try:
            out = await asyncio.wait_for(self._solve(spec.example.question, episode), self.cfg.program.timeout_s)
            if isinstance(out, str):
                answer = out
            else:
                episode.fault("return", f"returned {type(out).__name__}, not str")
        except asyncio.TimeoutError:
            episode.fault("timeout", f"still running after program.timeout_s={self.cfg.program.timeout_s}")
        except ProgramFault:
            pass  # already flagged where it was raised
        except Exception as exc:  # noqa: BLE001 - a user's program must not end the rollout
            episode.fault("error", str(exc))
            self._warn(type(exc).__name__, str(exc))
        finally:
            episode.close()
            if sink_tokens is not None:
                sink_tokens.put_nowait(None)
        flags = +episode.flags
        if episode.faulted:
            answer = ""
        return SampleResult(spec, pin.version, tuple(episode.calls), answer, flags)

    async def _solve(self, question: str, episode: Episode) -> Any:
        if self.endpoint is None:
            return await self.program.fn(question, ProgramClient(episode))
        async with self.endpoint.open(episode) as base_url:
            if self.program.is_async:
                return await self.program.fn(question, base_url)
            # asyncio's default pool has min(32, cores + 4) threads: a sync program holds one for
            # its whole run, so that pool would cap the samples in flight (and the engine's batch)
            self._threads = self._threads or ThreadPoolExecutor(self.cfg.rollout.max_num_seqs, "program")
            return await asyncio.get_running_loop().run_in_executor(self._threads, self.program.fn, question, base_url)

    def _warn(self, kind: str, message: str) -> None:
        if (self.program.entry, kind) not in _WARNED:  # once per process and kind, like a raising reward_fn
            _WARNED.add((self.program.entry, kind))
            print(f"[program] {self.program.entry} raised {kind}: {message[:200]}; the sample scores 0 "
                  f"(counted in {FAULT}error)", flush=True)

    async def stream(self, specs: Sequence[SampleSpec], acquire: Callable[[], Pin],
                     release: Callable[[Pin], Any], policy: SamplingPolicy) -> AsyncIterator[SampleResult]:
        """Yield samples as they finish."""
        async for result in stream_samples(self.run_sample, specs, acquire, release, policy):
            yield result
