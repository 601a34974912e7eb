"""One agent call on vLLM's async engine: the single path every rollout takes to the engine.

The graph executor (``executor.py``) and the program runtime (``programs/``) both call
:meth:`EngineCalls.generate` with the exact prompt token ids, the agent's adapter and its
seed, and get back a :class:`NodeCall`: what the engine saw and sampled, token for token,
which becomes one trajectory row. Nothing downstream re-tokenises text.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from typing import Any, Mapping, NamedTuple, Sequence

from neuromas_dist.config import Config, agent_sampling

FINISH_ABORT = "abort"  # the call never ran: its prompt could not fit max_model_len


class SamplingPolicy(NamedTuple):
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int  # base seed of the run; each request's seed is derived from it
    stop: tuple[str, ...] = ()  # strings that end a response (kept out of it, as vLLM does)


def node_policy(cfg: Config, name: str, run: SamplingPolicy) -> SamplingPolicy:
    """The sampling of agent or node ``name`` (``config.agent_sampling``) over the pass's
    ``run`` policy: a greedy pass (evaluation, temperature 0) stays greedy, and a served
    request's lower token cap holds for every agent."""
    t, p, most, stop = agent_sampling(cfg, name)
    greedy = run.temperature == 0
    capped = run.max_new_tokens < cfg.sampling.max_new_tokens  # a served request's own max_tokens
    return run._replace(temperature=run.temperature if greedy else t, top_p=run.top_p if greedy else p,
                        max_new_tokens=min(most, run.max_new_tokens) if capped else most, stop=stop)


class NodeCall(NamedTuple):
    """One call of one agent (a graph node is an agent that is called once per sample)."""

    node: str
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    prompt_truncated: bool
    latency_s: float
    call_index: int = 0  # this agent's 0-based call number within its sample


def request_seed(base_seed: int, step: int, question_id: str, sample_index: int, node: str) -> int:
    """Stable per-request seed: same run, step, sample and node -> same tokens."""
    key = f"{base_seed}|{step}|{question_id}|{sample_index}|{node}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") & 0x7FFFFFFF


def call_seed(base_seed: int, step: int, question_id: str, sample_index: int, agent: str, call_index: int) -> int:
    """The seed of an agent's ``call_index``-th call of a sample. A first call draws what a
    graph node of the same name draws, so a program that calls each node once (the
    NeuroMAS DAG written as a program) samples exactly what the built-in executor samples."""
    name = agent if call_index == 0 else f"{agent}#{call_index}"
    return request_seed(base_seed, step, question_id, sample_index, name)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop string, which is left out (OpenAI's and vLLM's rule). The
    row keeps every sampled id: the last one may reach past the stop string, and the
    learner must score the tokens that were sampled."""
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[:min(cuts)] if cuts else text


def sampled_logprobs(token_ids: Sequence[int], logprobs: Sequence[Mapping[int, Any]] | None) -> list[float]:
    """The logprob of each sampled token from vLLM's per-position dicts."""
    if token_ids and not logprobs:
        raise RuntimeError(f"vLLM returned {len(token_ids)} tokens without logprobs; SamplingParams.logprobs must be 0")
    return [float(pos[tok].logprob) for tok, pos in zip(token_ids, logprobs or ())]


class EngineCalls:
    """Calls on ``engine`` (an ``AsyncLLM`` or a fake with the same ``generate`` coroutine-iterator
    signature), decoded with ``tokenizer``, within ``max_model_len``."""

    def __init__(self, engine: Any, tokenizer: Any, max_model_len: int) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self._request_ids = itertools.count()

    def aborted(self, agent: str, call_index: int = 0, tokens: "asyncio.Queue | None" = None) -> NodeCall:
        """The call of a prompt that leaves no room for one new token: it never runs."""
        if tokens is not None:
            tokens.put_nowait(None)
        return NodeCall(agent, [], [], [], "", FINISH_ABORT, True, 0.0, call_index)

    async def generate(self, agent: str, prompt_ids: list[int], lora_request: Any, policy: SamplingPolicy,
                       seed: int, *, call_index: int = 0, prompt_truncated: bool = False,
                       tokens: "asyncio.Queue | None" = None) -> NodeCall:
        """Sample one response to ``prompt_ids`` under ``lora_request``. With ``tokens``, every
        new token id goes there as it is generated (a list per engine step), then None."""
        if len(prompt_ids) >= self.max_model_len:
            return self.aborted(agent, call_index, tokens)
        max_tokens = min(policy.max_new_tokens, self.max_model_len - len(prompt_ids))
        params = sampling_params(policy, max_tokens, seed, stream=tokens is not None)
        start = time.perf_counter()
        out = await self._generate(prompt_ids, params, lora_request, tokens)
        completion = out.outputs[0]
        token_ids = list(completion.token_ids)
        # Decode here rather than use vLLM's incremental text: the two differ on broken
        # UTF-8 fragments, and downstream prompts must be reproducible from the row's ids.
        text = cut_at_stop(self.tokenizer.decode(token_ids, skip_special_tokens=True), policy.stop)
        return NodeCall(agent, list(prompt_ids), token_ids, sampled_logprobs(token_ids, completion.logprobs), text,
                        str(completion.finish_reason or FINISH_ABORT), prompt_truncated,
                        time.perf_counter() - start, call_index)

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


def sampling_params(policy: SamplingPolicy, max_tokens: int, seed: int, stream: bool = False) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        temperature=policy.temperature,
        top_p=policy.top_p,
        max_tokens=max_tokens,
        logprobs=0,  # 0 = only the sampled token's logprob
        seed=None if policy.temperature == 0 else seed,
        stop=list(policy.stop) or None,
        # no per-token deltas (less IPC), unless a caller streams the tokens: then all ids so far
        output_kind=RequestOutputKind.CUMULATIVE if stream else RequestOutputKind.FINAL_ONLY,
        # the caller decodes the final ids itself; only stop strings need vLLM to detokenize
        detokenize=bool(policy.stop),
    )
