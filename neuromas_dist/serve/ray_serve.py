"""The same OpenAI-compatible app as N Ray Serve replicas: each replica is a Ray actor with
its own ``ServedGraph`` (one vLLM engine, every node's adapter), placed by Ray like a
rollout worker (a GPU each when the run's rollout workers had one); Serve's proxy spreads
requests over them behind one HTTP port. Joins ``RAY_ADDRESS`` when set, else starts a
local Ray."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any, Sequence

import ray
from ray import serve
from starlette.responses import Response, StreamingResponse

from neuromas_dist.driver.cluster import actor_env, cluster_address
from neuromas_dist.serve.graph import ServedGraph
from neuromas_dist.serve.openai_api import build_app

APP_NAME = "neuromas"


def deployment(run_dir: Path, overrides: Sequence[str], model_name: str, api_key: str | None,
               replicas: int, gpus: float) -> Any:
    """The bound Serve application: ``replicas`` copies of the graph's app."""
    graph_args = (str(run_dir), list(overrides))

    class Graph:
        def __init__(self) -> None:
            self.graph = ServedGraph(*graph_args)
            self.app = build_app(self.graph, model_name, api_key, manage=False)
            self._started = False
            self._lock: Any = None

        async def _start(self) -> None:
            # in the replica's event loop, where the engine must live; once, however many
            # requests arrive together
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if not self._started:
                    await self.graph.start()
                    self._started = True

        async def __call__(self, request: Any) -> Any:
            await self._start()
            return await _asgi(self.app, request)

        def check_health(self) -> None:
            if self._started and self.graph.worker is None:
                raise RuntimeError("the replica's engine is gone")

    # applied by call, not as a class decorator: mypy keeps a decorated class's own type
    return serve.deployment(name="graph", num_replicas=replicas, ray_actor_options={"num_gpus": gpus, "num_cpus": 1},
                            max_ongoing_requests=256)(Graph).bind()


async def _asgi(app: Any, request: Any) -> Any:
    """Run the FastAPI app on a Starlette request Serve hands over; returns its response.
    Streaming responses are passed through as Starlette ``StreamingResponse`` objects."""
    messages: list[dict] = []
    body = await request.body()
    scope = dict(request.scope)
    sent = {"body": False}

    async def receive() -> dict:
        if not sent["body"]:
            sent["body"] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    chunks = [m.get("body", b"") for m in messages if m["type"] == "http.response.body"]
    headers = {k.decode(): v.decode() for k, v in start.get("headers", [])}
    if headers.get("content-type", "").startswith("text/event-stream"):
        async def replay():
            for chunk in chunks:
                yield chunk
        return StreamingResponse(replay(), status_code=start["status"], media_type="text/event-stream")
    return Response(b"".join(chunks), status_code=start["status"], headers=headers)


def serve_replicas(graph: Any, overrides: Sequence[str], model_name: str, api_key: str | None, replicas: int,
                   host: str, port: int) -> int:
    """``graph``: the checked ``ServedGraph`` (its engine is not started here: each replica
    starts its own from the same run directory)."""
    cfg, run_dir = graph.cfg, graph.run_dir
    gpus = 1.0 if cfg.resources.rollout_gpus > 0 else 0.0
    if not ray.is_initialized():
        address = cluster_address(cfg)
        env = {"env_vars": {**actor_env(cfg), **{k: v for k, v in os.environ.items() if k.startswith("VLLM_")}}}
        if address:
            ray.init(address=address, runtime_env=env)
        else:  # logical CPUs: a replica per CPU would refuse the second replica on a 2-core box
            ray.init(num_cpus=max(os.cpu_count() or 1, replicas + 1), include_dashboard=False, runtime_env=env,
                     configure_logging=False)
    serve.start(http_options={"host": host, "port": port})
    serve.run(deployment(run_dir, overrides, model_name, api_key, replicas, gpus), name=APP_NAME, route_prefix="/")
    print(f"[serve] {run_dir}: {replicas} Ray Serve replicas as model {model_name!r} on http://{host}:{port}",
          flush=True)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
        ray.shutdown()
    return 0
