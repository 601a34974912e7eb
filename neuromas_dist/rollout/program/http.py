"""An OpenAI-compatible endpoint on 127.0.0.1 inside the rollout worker (``program.transport: http``).

A program that builds its own ``openai.OpenAI(base_url=...)`` (or a framework that takes a
base URL) is trained unmodified: each sample's run gets a base URL with a fresh random key
in its path, ``http://127.0.0.1:<port>/<key>/v1``, which attributes every request to that
sample's episode; ``model`` names the agent. Requests are answered through the same
:func:`client.complete` as the in-process client, so both transports make the
same rows for the same program and seeds. A refused call is a 400 (which the ``openai``
client does not retry), an unknown or finished episode a 404.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from aiohttp import web

from neuromas_dist.rollout.program.client import complete
from neuromas_dist.rollout.program.episode import Episode, ProgramFault


class LoopbackEndpoint:
    """One aiohttp server per worker, serving every running episode by its key."""

    def __init__(self) -> None:
        self._episodes: dict[str, Episode] = {}
        self._runner: web.AppRunner | None = None
        self._started: asyncio.Future | None = None
        self.port = 0

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1 (once: every sample's first call awaits the same start)."""
        self._started = self._started or asyncio.ensure_future(self._listen())
        await asyncio.shield(self._started)

    async def _listen(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{key}/v1/chat/completions", self._chat)
        app.router.add_get("/{key}/v1/models", self._models)
        # a client gone (its program timed out or was cancelled) cancels its request's handler,
        # and so the engine call it was waiting on
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner, self.port = runner, runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._runner, self._started = None, None

    @asynccontextmanager
    async def open(self, episode: Episode) -> AsyncIterator[str]:
        """The base URL of ``episode`` while the program runs; gone (404) once it ends."""
        await self.start()
        key = secrets.token_hex(16)
        self._episodes[key] = episode
        try:
            yield f"http://127.0.0.1:{self.port}/{key}/v1"
        finally:
            del self._episodes[key]

    async def _chat(self, request: web.Request) -> web.Response:
        episode = self._episodes.get(request.match_info["key"])
        if episode is None:
            return _error(404, "not_found", "no running episode has this key (its program run has ended)")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "bad_request", "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "bad_request", "the request body must be a JSON object")
        body = dict(body)
        try:
            completion = await complete(episode, body.pop("model", None), body.pop("messages", None), body)
        except ProgramFault as fault:
            return _error(400, fault.kind, str(fault))
        return web.json_response(completion.model_dump(exclude_none=True))

    async def _models(self, request: web.Request) -> web.Response:
        episode = self._episodes.get(request.match_info["key"])
        if episode is None:
            return _error(404, "not_found", "no running episode has this key")
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "neuromas"} for name in episode.policies]})


def _error(status: int, code: str, message: str) -> web.Response:
    payload: dict[str, Any] = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return web.json_response(payload, status=status)
