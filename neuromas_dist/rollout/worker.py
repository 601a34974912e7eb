"""The rollout worker: one vLLM engine, every agent's adapter, the graph executor or a program's runtime.

``RolloutWorker`` is a plain class with async methods, so it runs in-process under
``asyncio`` (benchmarks) and, wrapped by :func:`start_workers`, as an async Ray actor
whose :meth:`RolloutWorker.rollout` is a Ray streaming generator: record batches reach
the caller through the object store as samples finish.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any, AsyncIterator, Callable, Sequence

import pyarrow as pa

from neuromas_dist.adapters.peft_io import AdapterSet
from neuromas_dist.config import Config
from neuromas_dist.graph.growth import GrowthGate
from neuromas_dist.graph.prompts import PromptStyle
from neuromas_dist.graph.topology import Topology
from neuromas_dist.models.tiny import ensure_tiny_model
from neuromas_dist.programs.entry import load_program
from neuromas_dist.rollout.adapter_slots import AdapterSlots
from neuromas_dist.rollout.adapters import zero_adapter_set
from neuromas_dist.rollout.calls import EngineCalls, node_policy
from neuromas_dist.rollout.engine import build_engine, child_pids, engine_kwargs, kill_pids
from neuromas_dist.rollout.executor import GraphExecutor, SampleResult, SampleSpec, SamplingPolicy
from neuromas_dist.rollout.lora_registry import Pin
from neuromas_dist.rollout.program.http import LoopbackEndpoint
from neuromas_dist.rollout.program.runtime import ProgramExecutor
from neuromas_dist.rollout.rows import sample_id, score_sample
from neuromas_dist.tasks import Example, Task, make_task, synthetic_task
from neuromas_dist.trajectories.schema import to_record_batch
from neuromas_dist.trajectories.shards import split_by_owner
from neuromas_dist.trajectories.summary import BatchSummary, SampleRecord, summarize

_END = object()
PLACEHOLDER_VERSION = -1  # the worker's own zero adapters, before any learner broadcast
CODE_ISOLATION = "rollout/code_isolation_full"  # 1.0: this worker's code checks run fully jailed
EVAL_SEED_STEP = -1  # the "step" that seeds sampled evaluation: fixed, so every evaluation draws alike


class StaleWorker(RuntimeError):
    """A rollout asked of a worker process the driver has not configured (Ray restarted it)."""


def resolve_model_dir(cfg: Config) -> str:
    """``tiny`` -> the locally built tiny model; anything else is given to vLLM as is."""
    if cfg.model.name_or_path == "tiny":
        return str(ensure_tiny_model(seed=cfg.model.tiny_seed))
    return cfg.model.name_or_path


class RolloutWorker:
    """One vLLM engine executing the agent graph (or ``program.entry``) with per-agent LoRA adapters."""

    def __init__(self, cfg: Config, worker_id: int = 0, *, model_dir: str | None = None,
                 task: Task | None = None) -> None:
        self.worker_id = worker_id
        self.model_dir = str(model_dir) if model_dir else resolve_model_dir(cfg)
        self._engine: Any = None
        self._start_lock: asyncio.Lock | None = None
        self.incarnation = uuid.uuid4().hex  # new after every (Ray) restart of this worker
        self._configure(cfg, task if task is not None else default_task(cfg), AdapterSlots())

    def _configure(self, cfg: Config, task: Task, adapters: AdapterSlots) -> None:
        """What belongs to one run: its config, task, graph or program, adapters and gauges."""
        self.cfg, self.task, self.adapters = cfg, task, adapters
        self.topology = Topology.of_config(cfg.topology.widths, cfg.topology.edges)
        self.program = load_program(cfg.program.entry, cfg.program.transport) if cfg.program.entry else None
        self.endpoint = LoopbackEndpoint() if self.program and cfg.program.transport == "http" else None
        self.gauges: dict[str, float] = {}  # what start() reports: engine start, code isolation
        self.gate: GrowthGate | None = None  # while a grown graph fades in
        self.adapters.engine = self._engine
        self._executor: GraphExecutor | ProgramExecutor | None = None if self._engine is None else self._make_executor()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> dict[str, float]:
        """Start the engine and load version-0 adapters (idempotent; other calls do it too)."""
        self._start_lock = self._start_lock or asyncio.Lock()
        async with self._start_lock:
            if self._engine is None:
                self.gauges.update(isolation_gauge(self.task))
                t0 = time.perf_counter()
                self.tokenizer, self._engine = open_engine(self.cfg, self.model_dir)
                self.adapters.engine = self._engine
                self._executor = self._make_executor()
                self.gauges["rollout/engine_start_s"] = time.perf_counter() - t0
            if self.adapters.version is None:
                # Zero-contribution adapters so a started worker can serve at once. Version -1:
                # the learner's own initial adapters are version 0 and must still install over these.
                zero = zero_adapter_set(self.model_dir, _made(self._executor).names, self.cfg.lora,
                                        seed=self.cfg.trainer.seed, trust_remote_code=self.cfg.model.trust_remote_code)
                await self.load_adapters(zero._replace(version=PLACEHOLDER_VERSION))
        return dict(self.gauges)

    async def reuse(self, cfg: Config, task: Task) -> None:
        """Serve another run on this engine (``rollout.keep_warm``): ``cfg`` and ``task`` replace
        the last run's, whose adapters leave the engine (``AdapterSlots.handover``). Refused when
        the run needs an engine built otherwise."""
        if engine_kwargs(cfg, self.model_dir, seed=cfg.trainer.seed) != \
                engine_kwargs(self.cfg, self.model_dir, seed=self.cfg.trainer.seed):
            raise ValueError(f"rollout worker {self.worker_id}: the new run needs an engine built otherwise")
        adapters = await self.adapters.handover()
        if self.endpoint is not None:
            await self.endpoint.close()
        self._configure(cfg, task, adapters)
        if self._engine is not None:
            self.gauges.update(isolation_gauge(task))

    @property
    def engine(self) -> Any:
        """The worker's ``AsyncLLM`` (None before :meth:`start`), e.g. for raw-vLLM baselines."""
        return self._engine

    def _make_executor(self) -> GraphExecutor | ProgramExecutor:
        calls = EngineCalls(self._engine, self.tokenizer, self.cfg.model.max_model_len)
        if self.program:
            return ProgramExecutor(calls, self.program, self.cfg, self.endpoint)
        return graph_executor(self.cfg, calls, self.topology, self.task, self.gate)

    def process_ids(self) -> dict[str, Any]:
        """This worker's process and its engine's processes (vLLM's EngineCore and workers):
        what fault injection kills, and what :meth:`kill_engine` stops."""
        return {"incarnation": self.incarnation, "actor": os.getpid(), "engine": child_pids()}

    def kill_engine(self) -> int:
        """SIGKILL the engine's processes (a hung engine cannot be shut down politely, and a
        stopped one would outlive this actor). Returns how many were signalled."""
        return kill_pids(child_pids())

    async def shutdown(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            # Drop every reference (the executor holds one too): an AsyncLLM finalised
            # at interpreter exit, after asyncio is gone, prints a TypeError traceback.
            self._engine = self._executor = self.adapters.engine = None
        if self.endpoint is not None:
            await self.endpoint.close()
        self.adapters.close()

    # ------------------------------------------------------------ adapters and topology

    async def load_adapters(self, adapters: AdapterSet) -> dict[str, float]:
        """Hot swap: ``adapters`` under fresh LoRA ids; the old version is dropped once
        the samples pinning it finish. Returns timing and size of the load."""
        if self._engine is None:
            await self.start()  # loads v0 first, then this version replaces it below
        missing = sorted(set(_made(self._executor).names) - set(adapters.tensors))
        if missing:
            raise ValueError(f"adapter set v{adapters.version} lacks nodes {', '.join(missing)}")
        seconds = await self.adapters.install(adapters)
        # The slots' counts show a leak: versions stay live while a sample pins them, never longer.
        return {"rollout/adapter_version": adapters.version, "rollout/adapter_load_s": seconds,
                **self.adapters.stats()}

    async def set_topology(self, widths: Sequence[int], edges: Sequence[str] = (),
                           gate: GrowthGate | None = None) -> list[str]:
        """Switch to a grown topology (with its growth gate, if gated); load adapters
        covering its nodes before the next rollout."""
        if self.program:
            raise ValueError("a program has no topology to grow")
        self.topology = Topology.of_config(widths, edges)
        self.gate = gate
        if self._engine is not None:
            self._executor = self._make_executor()
        return list(self.topology.names)

    # ------------------------------------------------------------ rollouts

    async def rollout(self, step: int, examples: Sequence[Example], n_samples: int | None = None,
                      indices: Sequence[Sequence[int]] | None = None, incarnation: str | None = None,
                      shards: int = 1) -> AsyncIterator[pa.RecordBatch | BatchSummary]:
        """Sample every example ``n_samples`` times (or, with ``indices``, only the listed
        sample indices of each example: a restarted worker redoing what was lost). As
        samples finish, yield each batch of whole samples as ``shards`` pieces (one per
        learner rank, ``trajectories.shards``) and then its ``BatchSummary``: the summary
        comes last, so once the driver holds it every piece already exists, and a worker
        dying in between leaves its samples unreceived (rerun), never half-received.
        ``incarnation``: the process the driver configured; a worker Ray restarted since
        holds its placeholder zero adapters and the config's topology, so it refuses rather
        than sample silently from them."""
        if incarnation is not None and incarnation != self.incarnation:
            raise StaleWorker(f"rollout worker {self.worker_id} was restarted since the driver last loaded it "
                              f"(adapter version {self.adapters.version}); refusing to sample")
        await self.start()
        n = n_samples or self.cfg.sampling.n_samples
        ks = indices if indices is not None else [range(n)] * len(examples)
        specs = [SampleSpec(step, ex, k) for ex, kk in zip(examples, ks) for k in kk]
        async for batch, records in self._run(specs, sampling_policy(self.cfg, greedy=False)):
            pieces = split_by_owner(batch, shards)
            for piece in pieces:
                yield piece
            yield summarize(batch, pieces, self.task.answer_type, records)

    async def evaluate(self, examples: Sequence[Example], step: int = -1, samples: int = 0,
                       ablate: str | None = None) -> dict[str, pa.Table | None]:
        """Greedy pass over ``examples`` and, with ``samples`` > 0, that many sampled passes
        at the training temperature: ``{"greedy": Table, "sampled": Table | None}``.
        ``ablate``: that node's LoRA B is zeroed (it runs as the base model) in this pass only.

        Sampled passes use the same request seeds at every evaluation (``EVAL_SEED_STEP``),
        so "before" and "after" differ by the adapters, not by the draw.
        """
        await self.start()
        if ablate is None:
            return await self._passes(examples, step, samples, self.adapters.acquire)
        if ablate not in (names := _made(self._executor).names):
            raise ValueError(f"cannot ablate {ablate}: not a node of {', '.join(names)}")
        async with self.adapters.ablating(ablate) as acquire:
            return await self._passes(examples, step, samples, acquire)

    async def _passes(self, examples: Sequence[Any], step: int, samples: int, acquire: Callable[[], Pin]
                      ) -> dict[str, pa.Table | None]:
        greedy = await self._collect([SampleSpec(step, ex, 0) for ex in examples], greedy=True, acquire=acquire)
        sampled = None
        if samples > 0:
            sampled = await self._collect([SampleSpec(step, ex, k, EVAL_SEED_STEP) for ex in examples
                                           for k in range(samples)], greedy=False, acquire=acquire)
        return {"greedy": greedy, "sampled": sampled}

    async def run_one(self, spec: SampleSpec, policy: SamplingPolicy, sink_tokens: asyncio.Queue | None = None
                      ) -> SampleResult:
        """One pass of the graph under the current adapters (a served request; unscored).
        Cancelling it cancels its engine requests."""
        await self.start()
        pin = self.adapters.acquire()
        try:
            return await _made(self._executor).run_sample(spec, pin, policy, sink_tokens)
        finally:
            self.adapters.release(pin)

    def prompt_tokens(self, question: str) -> int | None:
        """Tokens of the first prompt ``question`` makes; None when it leaves no room for one new token."""
        return _made(self._executor).prompt_tokens(question)

    async def _collect(self, specs: list[SampleSpec], greedy: bool, acquire: Callable[[], Pin]) -> pa.Table | None:
        batches = [batch async for batch, _ in self._run(specs, sampling_policy(self.cfg, greedy=greedy), acquire)]
        return pa.Table.from_batches(batches) if batches else None

    async def _run(self, specs: list[SampleSpec], policy: SamplingPolicy, acquire: Callable[[], Pin] | None = None
                   ) -> AsyncIterator[tuple[pa.RecordBatch, dict[str, SampleRecord]]]:
        """Each group of finished samples as (their rows, each sample's record)."""
        results = _made(self._executor).stream(specs, acquire or self.adapters.acquire, self.adapters.release, policy)
        async for group in _grouped(results, self.cfg.rollout.batch_samples, self.cfg.rollout.batch_seconds):
            scored = await asyncio.gather(*(
                score_sample(self.task, result, _made(self._executor).positions, self.worker_id) for result in group))
            rows = [row for sample_rows_, _ in scored for row in sample_rows_]
            records: dict[str, SampleRecord] = {sample_id(r.spec.example.id, r.spec.sample_index): rec
                                                for r, (_, rec) in zip(group, scored)}
            yield to_record_batch(rows), records


async def _grouped(results: AsyncIterator[SampleResult], every: int, seconds: float
                   ) -> AsyncIterator[list[SampleResult]]:
    """Group finished samples: flush at ``every`` samples or ``seconds`` after the last flush."""
    queue: asyncio.Queue = asyncio.Queue()

    async def pump() -> None:
        try:
            async for result in results:
                await queue.put(result)
            await queue.put(_END)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer below
            await queue.put(exc)

    producer = asyncio.ensure_future(pump())
    group: list[SampleResult] = []
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                item = None
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                group.append(item)
            if group and (len(group) >= every or time.monotonic() >= deadline):
                yield group
                group, deadline = [], time.monotonic() + seconds
            elif not group and time.monotonic() >= deadline:
                deadline = time.monotonic() + seconds
        if group:
            yield group
    finally:
        producer.cancel()


def open_engine(cfg: Config, model_dir: str) -> tuple[Any, Any]:
    """The tokenizer and the started engine of a worker."""
    # Imported here, in the worker's process: at the top it would cost the driver,
    # which imports this module only to name the actor class, ~4 s of transformers.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=cfg.model.trust_remote_code)
    return tokenizer, build_engine(cfg, model_dir, seed=cfg.trainer.seed)


def isolation_gauge(task: Task) -> dict[str, float]:
    """Each worker's machine, not only the driver's, must isolate code checks as the task
    requires: raises IsolationError (one line) before an engine costs anything."""
    isolation = task.check_environment()
    return {} if isolation is None else {CODE_ISOLATION: float(isolation.level == "full")}


def sampling_policy(cfg: Config, greedy: bool) -> SamplingPolicy:
    s = cfg.sampling
    return SamplingPolicy(0.0 if greedy else s.temperature, 1.0 if greedy else s.top_p,
                          s.max_new_tokens, cfg.trainer.seed)


def _made(executor: GraphExecutor | ProgramExecutor | None) -> GraphExecutor | ProgramExecutor:
    """The worker's executor, which :meth:`RolloutWorker.start` makes with the engine."""
    if executor is None:
        raise RuntimeError("the rollout worker is not started (RolloutWorker.start)")
    return executor


def graph_executor(cfg: Config, calls: EngineCalls, topology: Topology, task: Task,
                   gate: GrowthGate | None) -> GraphExecutor:
    return GraphExecutor(calls, topology, answer_format=task.answer_format,
                         upstream_token_budget=cfg.topology.upstream_token_budget, gate=gate,
                         style=PromptStyle(cfg.topology.upstream_cut, cfg.prompts.system, cfg.prompts.enable_thinking),
                         node_policy=(lambda node, run: node_policy(cfg, node, run)) if cfg.sampling.per_node else None)


def default_task(cfg: Config) -> Task:
    """The config's task without loading its data (the driver owns the examples)."""
    if cfg.data.task.startswith("synthetic/"):
        return synthetic_task(cfg.data.task.removeprefix("synthetic/"))
    return make_task(cfg.data.task, cfg.data.answer_type)
