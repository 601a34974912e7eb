"""A trained run directory as something to ask: its graph, prompts, sampling settings and
final adapters on one in-process rollout worker (one vLLM engine).

Every request is a sample of the graph (``rollout.executor``): all nodes of all requests
in flight reach the one engine concurrently, so vLLM batches them as in rollout.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any, AsyncGenerator, NamedTuple, Sequence

from neuromas_dist.graph.topology import Topology
from neuromas_dist.rollout.executor import SampleResult, SampleSpec, SamplingPolicy
from neuromas_dist.rollout.worker import RolloutWorker, default_task
from neuromas_dist.run_dir.finished import open_run
from neuromas_dist.tasks.base import Example


class Params(NamedTuple):
    """One request's sampling: temperature 0 is greedy (the run's evaluation)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int | None = None  # per node; None = the run's sampling.max_new_tokens
    seed: int | None = None


class ServedGraph:
    """The run's graph on one engine. ``start`` in the event loop that will serve."""

    def __init__(self, run_dir: str | Path, overrides: Sequence[str] = ()):
        run = open_run(Path(run_dir), overrides)
        self.run_dir, self.cfg, self.topology, self.adapters = run.path, run.cfg, run.topology, run.adapters
        self.task = default_task(self.cfg)
        self.worker: Any = None
        self._ids = itertools.count()

    async def start(self) -> None:
        self.worker = RolloutWorker(self.cfg, task=self.task)
        await self.worker.start()
        if isinstance(self.topology, Topology):  # a program's agents come with its config
            await self.worker.set_topology(self.topology.widths, self.topology.to_dict()["edges"])
        await self.worker.load_adapters(self.adapters)

    async def shutdown(self) -> None:
        if self.worker is not None:
            await self.worker.shutdown()
            self.worker = None

    @property
    def tokenizer(self) -> Any:
        return self.worker.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.cfg.model.max_model_len

    def engine_requests(self) -> int:
        """Requests the engine holds unfinished (0 when idle: nothing leaked)."""
        engine = self.worker.engine if self.worker is not None else None
        return int(engine.get_num_unfinished_requests()) if engine is not None else 0

    def prompt_tokens(self, question: str) -> int | None:
        """A first-layer node's prompt length for ``question``; None = it cannot fit."""
        return self.worker.prompt_tokens(question)

    def policy(self, p: Params) -> SamplingPolicy:
        s = self.cfg.sampling
        max_tokens = s.max_new_tokens if p.max_tokens is None else min(p.max_tokens, s.max_new_tokens)
        return SamplingPolicy(p.temperature, p.top_p if p.temperature > 0 else 1.0, max_tokens,
                              self.cfg.trainer.seed if p.seed is None else p.seed)

    def _spec(self, question: str, index: int, request: int) -> SampleSpec:
        # the request id and the sample index enter each node's request seed: the n samples of
        # a request differ, and requests with a seed share id 0, so they draw alike every time
        return SampleSpec(0, Example(f"r{request}", question, ""), index)

    async def answer(self, question: str, n: int = 1, params: Params = Params()) -> list[SampleResult]:
        """``n`` passes of the graph over ``question``."""
        request = next(self._ids) if params.seed is None else 0
        policy = self.policy(params)
        return list(await asyncio.gather(*(self.worker.run_one(self._spec(question, k, request), policy)
                                           for k in range(n))))

    async def stream(self, question: str, n: int = 1, params: Params = Params()
                     ) -> AsyncGenerator[tuple[int, str, SampleResult | None], None]:
        """(choice, text delta of its sink, None) as the sinks generate, then (choice, the
        rest, the whole pass) once each pass is done. Closing the iterator cancels every
        pass and so every engine request."""
        request = next(self._ids) if params.seed is None else 0
        policy = self.policy(params)
        out: asyncio.Queue = asyncio.Queue()

        async def one(k: int) -> None:
            try:
                tokens: asyncio.Queue = asyncio.Queue()
                run = asyncio.ensure_future(self.worker.run_one(self._spec(question, k, request), policy, tokens))
                text = IncrementalText(self.tokenizer)
                try:
                    while (ids := await tokens.get()) is not None:
                        if delta := text.push(ids):
                            out.put_nowait((k, delta, None))
                    result = await run
                finally:
                    run.cancel()
                # the answer past what streamed: the sink's last tokens, or a program's whole return
                out.put_nowait((k, result.answer[text.sent:], result))
            except BaseException as exc:
                out.put_nowait(exc)
                raise

        tasks = [asyncio.ensure_future(one(k)) for k in range(n)]
        try:
            for _ in range(n):
                while True:
                    item = await out.get()
                    if isinstance(item, BaseException):
                        raise item
                    yield item
                    if item[2] is not None:
                        break
        finally:
            for task in tasks:
                task.cancel()


class IncrementalText:
    """Text of a growing list of token ids, handed out as deltas. Decoding the whole list
    each time (as the executor decodes a node's final ids) keeps the joined deltas equal to
    the final text; a trailing U+FFFD (a UTF-8 character split across tokens) waits."""

    ids: list[int]

    def __init__(self, tokenizer: Any):
        self.tokenizer, self.ids, self.sent = tokenizer, [], 0

    def push(self, ids: Sequence[int]) -> str:
        self.ids.extend(ids)
        return self.rest(hold_split_char=True)

    def rest(self, hold_split_char: bool = False) -> str:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if hold_split_char and text.endswith("\ufffd"):
            return ""
        delta, self.sent = text[self.sent:], len(text)
        return delta
