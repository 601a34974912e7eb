"""The client an in-process program gets: ``openai.AsyncOpenAI``'s chat interface, recorded.

``await client.chat.completions.create(model="solver", messages=[...], max_tokens=...,
stop=..., n=...)`` returns the ``openai`` package's own ``ChatCompletion``, so code written
for OpenAI runs unchanged; ``model`` names the agent. The loopback endpoint (``http.py``)
answers with the same objects as JSON.
"""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace
from typing import Any, Sequence

from openai.types.chat import ChatCompletion

from neuromas_dist.rollout.calls import FINISH_ABORT, NodeCall
from neuromas_dist.rollout.program.episode import Episode

# Arguments of create() that do not change what is sampled: accepted and ignored. The
# runtime seeds every call itself; the rest is the openai client's own plumbing.
IGNORED = frozenset({"seed", "user", "extra_headers", "extra_query", "extra_body", "timeout", "metadata", "store"})


class ProgramClient:
    """``client.chat.completions.create(...)`` over one episode."""

    def __init__(self, episode: Episode) -> None:
        self.chat = SimpleNamespace(completions=_Completions(episode))


class _Completions:
    def __init__(self, episode: Episode) -> None:
        self._episode = episode

    async def create(self, *, model: str, messages: Sequence[Any], **kwargs: Any) -> ChatCompletion:
        return await complete(self._episode, model, messages, kwargs)


async def complete(episode: Episode, model: Any, messages: Any, kwargs: dict[str, Any]) -> ChatCompletion:
    """One ``chat.completions.create`` request on ``episode``: the in-process client and the
    loopback endpoint both answer through here."""
    known = {"temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n", "stream"}
    unknown = sorted(k for k, v in kwargs.items() if k not in known | IGNORED and v is not None)
    if unknown:
        raise episode.fault("bad_request", f"create({unknown[0]}=...) is not supported by the training runtime")
    if kwargs.get("stream"):
        raise episode.fault("bad_request", "create(stream=True) is not supported by the training runtime")
    max_tokens = kwargs.get("max_completion_tokens") or kwargs.get("max_tokens")
    calls = await episode.complete(str(model), messages, max_tokens=max_tokens, stop=kwargs.get("stop"),
                                   n=kwargs.get("n"), temperature=kwargs.get("temperature"),
                                   top_p=kwargs.get("top_p"))
    return chat_completion(calls, str(model))


def chat_completion(calls: Sequence[NodeCall], model: str) -> ChatCompletion:
    """The calls of one request as the ``openai`` package's ``ChatCompletion``."""
    choices = [{"index": i, "message": {"role": "assistant", "content": c.text},
                # a call whose prompt left no room ran no token: to a client that is a cut response
                "finish_reason": "length" if c.finish_reason in ("length", FINISH_ABORT) else "stop",
                "logprobs": None} for i, c in enumerate(calls)]
    prompt = sum(len(c.prompt_ids) for c in calls[:1])
    completion = sum(len(c.response_ids) for c in calls)
    return ChatCompletion.model_validate({
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "choices": choices,
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
