"""The OpenAI-compatible HTTP API over a served graph (FastAPI).

``POST /v1/chat/completions`` runs the whole graph for the last user message and answers
with the sink's text as the assistant message. Extension: ``neuromas.nodes``, one entry
per choice mapping every node to its text, finish reason and token counts; ``usage`` sums
tokens over every node call. ``stream: true`` streams the sink's tokens (Server-Sent
Events, chat.completion.chunk) once its inputs are done. ``GET /v1/models``, ``GET
/health``. Bad input is an OpenAI-style error object with a one-line message: 400 (bad
JSON, no user message, a prompt that cannot fit), 401 (API key), 404 (unknown model), 422
(a field out of range or of the wrong type).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncGenerator, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from neuromas_dist.serve.graph import Params, ServedGraph

MAX_N = 16


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: the text ones, joined
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # other OpenAI fields are accepted and ignored
    model: str | None = None
    messages: list[Message]
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0)
    stream: bool = False


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def error_body(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def one_line(exc: ValidationError) -> tuple[str, str]:
    """(the first invalid field, a one-line message naming it)."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return field, f"{field}: {err.get('msg', 'invalid')}"


def parse_request(raw: bytes, graph: ServedGraph, model_name: str) -> tuple[ChatRequest, str]:
    """The request and its question (the last user message); APIError on bad input."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"request body is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    if not isinstance(body, dict):
        raise APIError(400, "request body must be a JSON object")
    try:
        req = ChatRequest.model_validate(body)
    except ValidationError as exc:
        field, message = one_line(exc)
        raise APIError(422, message, param=field) from None
    if req.model not in (None, model_name):
        raise APIError(404, f"model {req.model!r} does not exist; this server serves {model_name!r}",
                       kind="not_found_error", param="model")
    users = [m for m in req.messages if m.role == "user"]
    if not users or not users[-1].text().strip():
        raise APIError(400, "messages: no user message with text to answer", param="messages")
    question = users[-1].text()
    tokens = graph.prompt_tokens(question)
    if tokens is None:
        raise APIError(400, f"the question does not fit: a node's prompt for it leaves no room to answer within "
                            f"model.max_model_len={graph.max_model_len} tokens", param="messages")
    return req, question


def params_of(req: ChatRequest) -> Params:
    cap = req.max_completion_tokens or req.max_tokens
    return Params(req.temperature, req.top_p, cap, req.seed)


def call_view(c: Any) -> dict[str, Any]:
    return {"text": c.text, "finish_reason": c.finish_reason, "prompt_tokens": len(c.prompt_ids),
            "completion_tokens": len(c.response_ids)}


def node_view(result: Any) -> dict[str, dict[str, Any]]:
    """Each agent's first call (a graph: each node's only one) by name."""
    return {node: call_view(c) for node, c in result.by_agent().items()}


def calls_view(result: Any) -> list[dict[str, Any]]:
    """Every call of the pass in the order they started (a program may call an agent often)."""
    return [{"agent": c.node, "call_index": c.call_index, **call_view(c)} for c in result.calls]


def usage(results: list[Any]) -> dict[str, int]:
    prompt = sum(len(c.prompt_ids) for r in results for c in r.calls)
    completion = sum(len(c.response_ids) for r in results for c in r.calls)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(result: Any) -> str:
    """The answer's: the sink's (a program: its last call's, when that call's text is the answer)."""
    last = result.calls[-1] if result.calls else None
    cut = last is not None and last.text == result.answer and last.finish_reason in ("length", "abort")
    return "length" if cut else "stop"


def completion(results: list[Any], model_name: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": i, "message": {"role": "assistant", "content": r.answer},
                         "finish_reason": finish_reason(r)} for i, r in enumerate(results)],
            "usage": usage(results), "neuromas": {"nodes": [node_view(r) for r in results],
                                                  "calls": [calls_view(r) for r in results]}}


async def sse_chunks(graph: ServedGraph, req: ChatRequest, question: str, model_name: str
                     ) -> AsyncGenerator[str, None]:
    """chat.completion.chunk events: the role, the sink's text deltas per choice, each
    choice's finish with its nodes (``neuromas``), the usage, then [DONE]."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model_name}

    def event(choices: list[dict], **extra: Any) -> str:
        return f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n"

    yield event([{"index": k, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                 for k in range(req.n)])
    results: dict[int, Any] = {}
    passes = graph.stream(question, req.n, params_of(req))
    try:
        async for k, delta, result in passes:
            if delta:
                yield event([{"index": k, "delta": {"content": delta}, "finish_reason": None}])
            if result is not None:
                results[k] = result
                yield event([{"index": k, "delta": {}, "finish_reason": finish_reason(result)}],
                            neuromas={"nodes": {str(k): node_view(result)}, "calls": {str(k): calls_view(result)}})
    finally:
        await passes.aclose()  # a client gone mid-stream: its passes are cancelled now, not at GC
    yield event([], usage=usage([results[k] for k in sorted(results)]))
    yield "data: [DONE]\n\n"


def build_app(graph: ServedGraph, model_name: str, api_key: str | None = None, manage: bool = True) -> Any:
    """The FastAPI app. ``manage``: start the graph's engine with the app (and stop it)."""
    @asynccontextmanager
    async def lifespan(_app: Any):
        if manage:
            await graph.start()
        try:
            yield
        finally:
            if manage:
                await graph.shutdown()

    app = FastAPI(title="neuromas_dist serve", lifespan=lifespan)
    state = {"in_flight": 0}
    replica = f"{socket.gethostname()}:{os.getpid()}"

    @app.middleware("http")
    async def tag(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["x-neuromas-replica"] = replica  # which engine answered (Ray Serve: which replica)
        return response

    @app.exception_handler(APIError)
    async def api_error(_request: Request, exc: APIError) -> Any:
        return JSONResponse(error_body(exc.status, exc.message, exc.kind, exc.param), status_code=exc.status)

    def authorize(request: Request) -> None:
        if api_key and request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise APIError(401, "missing or wrong API key (Authorization: Bearer <key>)", kind="authentication_error")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": model_name, "requests_in_flight": state["in_flight"],
                "engine_requests": graph.engine_requests()}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0,
                                            "owned_by": "neuromas_dist", "graph": list(graph.topology.widths),
                                            "agents": list(graph.topology.names)}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        authorize(request)
        req, question = parse_request(await request.body(), graph, model_name)
        if req.stream:
            return StreamingResponse(counted(sse_chunks(graph, req, question, model_name), state),
                                     media_type="text/event-stream")
        state["in_flight"] += 1
        try:
            results = await graph.answer(question, req.n, params_of(req))
        finally:
            state["in_flight"] -= 1
        return completion(results, model_name)

    return app


async def counted(chunks: AsyncGenerator[str, None], state: dict[str, int]) -> AsyncIterator[str]:
    """``chunks`` counted as one request in flight until it ends or the client goes away
    (Starlette then cancels the response task; closing ``chunks`` cancels the graph's passes)."""
    state["in_flight"] += 1
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        state["in_flight"] -= 1
        await chunks.aclose()
