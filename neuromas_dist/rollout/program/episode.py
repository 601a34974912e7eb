"""One run of a program for one sample: the calls it makes, recorded as the engine ran them.

The program names an agent and passes chat messages; the episode applies the chat
template, sends the exact token ids to the engine under that agent's adapter and seed, and
keeps the :class:`NodeCall` (prompt ids, sampled ids, logprobs): one trajectory row. A
call the program may not make raises :class:`ProgramFault` in the program and is
remembered here, so a program that catches it still scores 0.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any, Mapping, Sequence

from neuromas_dist.rollout.calls import EngineCalls, NodeCall, SamplingPolicy
from neuromas_dist.rollout.executor import SampleSpec
from neuromas_dist.rollout.lora_registry import Pin
from neuromas_dist.rollout.program import turns

FAULT = "rollout/flag_program_"  # + unknown_agent, max_calls, bad_request, error, timeout, return, closed
SAMPLING_IGNORED = "rollout/flag_program_sampling_ignored"  # a call's temperature/top_p differed from the agent's
RETOKENIZED = "rollout/flag_program_retokenized"  # an earlier reply sent back could not be spliced as sampled
NOT_FAULTS = (SAMPLING_IGNORED, RETOKENIZED)  # counted, but the sample is scored as usual


def faulted(flags: Mapping[str, float]) -> bool:
    """Whether a sample's flags hold a program fault (it scores 0)."""
    return any(k.startswith(FAULT) and k not in NOT_FAULTS and n for k, n in flags.items())


class ProgramFault(Exception):
    """A call the program may not make (its sample scores 0); ``kind`` names the flag."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Episode:
    """The calls of one sample's program run, in the order they started."""

    def __init__(self, spec: SampleSpec, pin: Pin, policies: Mapping[str, SamplingPolicy], calls: EngineCalls,
                 *, max_calls: int, enable_thinking: bool = False) -> None:
        self.spec, self.pin, self.policies, self.engine = spec, pin, policies, calls
        self.max_calls, self.enable_thinking = max_calls, enable_thinking
        self._slots: list[NodeCall | None] = []  # reserved when a call starts; None until it finishes
        self._counts: Counter = Counter()  # agent -> calls started (the next call_index)
        self._turns: defaultdict[str, list[turns.Turn]] = defaultdict(list)  # agent -> its finished calls
        self.flags: Counter = Counter()
        self.closed = False

    @property
    def calls(self) -> list[NodeCall]:
        """The finished calls (a call cut off by the program's timeout left no row)."""
        return [c for c in self._slots if c is not None]

    @property
    def faulted(self) -> bool:
        return faulted(self.flags)

    def fault(self, kind: str, message: str) -> ProgramFault:
        self.flags[FAULT + kind] = 1
        return ProgramFault(kind, message)

    async def complete(self, agent: str, messages: Sequence[Mapping[str, Any]], *, max_tokens: int | None = None,
                       stop: str | Sequence[str] | None = None, n: int | None = None,
                       temperature: float | None = None, top_p: float | None = None) -> list[NodeCall]:
        """``n`` responses of ``agent`` to ``messages`` (each its own call and row)."""
        policy = self._policy(agent, max_tokens, stop, temperature, top_p)
        n = 1 if n is None else n
        if not isinstance(n, int) or n < 1:
            raise self.fault("bad_request", f"n={n!r}: must be a positive integer")
        if len(self._slots) + n > self.max_calls:
            raise self.fault("max_calls", f"call {len(self._slots) + n} of the sample: program.max_calls="
                                          f"{self.max_calls}")
        messages = _checked(self, messages)
        prompt_ids, retokenized = turns.prompt_ids(self.engine.tokenizer, messages, self._turns[agent],
                                                   self.enable_thinking)
        self.flags[RETOKENIZED] += retokenized
        starts = [(len(self._slots) + i, self._counts[agent] + i) for i in range(n)]
        self._slots.extend([None] * n)
        self._counts[agent] += n
        out = await asyncio.gather(*(self._one(agent, prompt_ids, policy, slot, index) for slot, index in starts))
        self._turns[agent].extend(turns.Turn(turns.as_pairs(messages), call) for call in out)
        return list(out)

    async def _one(self, agent: str, prompt_ids: list[int], policy: SamplingPolicy, slot: int, index: int) -> NodeCall:
        call = await self.engine.generate(agent, prompt_ids, self.pin.requests[agent], policy,
                                          self.spec.seed(policy.seed, agent, index), call_index=index)
        if self.closed:  # finished after the program's run ended (its timeout): not part of the sample
            raise self.fault("closed", "the program's run already ended")
        self._slots[slot] = call
        return call

    def _policy(self, agent: str, max_tokens: int | None, stop: str | Sequence[str] | None,
                temperature: float | None, top_p: float | None) -> SamplingPolicy:
        if self.closed:
            raise self.fault("closed", "the program's run already ended (program.timeout_s)")
        if agent not in self.policies:
            raise self.fault("unknown_agent", f"model={agent!r} is not an agent of the program "
                                              f"(program.agents: {', '.join(self.policies)})")
        policy = self.policies[agent]
        # The learner scores an agent's rows under the agent's configured sampling; a call
        # sampling otherwise would train on a distribution the learner never sees.
        asked = ((temperature, policy.temperature), (top_p, policy.top_p))
        if any(want is not None and want != have for want, have in asked):
            self.flags[SAMPLING_IGNORED] += 1
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise self.fault("bad_request", f"max_tokens={max_tokens!r}: must be a positive integer")
        extra = (stop,) if isinstance(stop, str) else tuple(stop or ())
        if not all(isinstance(s, str) and s for s in extra):
            raise self.fault("bad_request", f"stop={stop!r}: must be a string or a list of strings")
        return policy._replace(max_new_tokens=min(max_tokens or policy.max_new_tokens, policy.max_new_tokens),
                               stop=tuple(dict.fromkeys(policy.stop + extra)))

    def close(self) -> None:
        self.closed = True


def _checked(episode: Episode, messages: Any) -> list[dict[str, str]]:
    """Chat messages as the template takes them: a non-empty list of {role, content: str}."""
    ok = isinstance(messages, (list, tuple)) and len(messages) > 0 and all(
        isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages)
    if not ok:
        raise episode.fault("bad_request", "messages must be a non-empty list of {'role': str, 'content': str}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]
