"""Rollout workers that die or hang, and steps assembled exactly once despite them.

``WorkerPool`` owns the rollout actors and what a restarted one must be told again (the
topology and the current adapters). Ray restarts a dead actor (``max_restarts``) from its
constructor arguments; the pool waits for the new incarnation and reloads it before it
gets work, so a restarted worker never samples from its placeholder zero adapters.

``StepRollout`` is one step's rollout: it knows which worker owns which (question,
sample) and which samples have arrived, keyed by ``sample_id``. A worker that fails
(actor death, engine death, a batch that cannot be fetched, or no end by the deadline)
is restarted and given exactly the samples that never arrived; rows of a sample that did
arrive are kept, and a sample arriving twice is dropped the second time. So a step holds
exactly one row per (question, sample, node) that ran, whatever died in between.

The driver decides all this from each batch's ``BatchSummary`` (sample ids, per-node sums)
and never fetches the rows: each learner rank's piece goes on to that rank as an
ObjectRef. Only a batch that repeats samples is fetched, to drop the repeats.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.exceptions import GetTimeoutError, RayError

from neuromas_dist.adapters.peft_io import AdapterSet
from neuromas_dist.config import Config
from neuromas_dist.graph.growth import GrowthGate
from neuromas_dist.rollout import warm_pool
from neuromas_dist.rollout.actors import shut_down_workers, split_examples
from neuromas_dist.rollout.rows import sample_id
from neuromas_dist.rollout.worker import CODE_ISOLATION
from neuromas_dist.tasks.base import Example, Task
from neuromas_dist.tasks.data import answer_type_of
from neuromas_dist.trajectories.schema import concat
from neuromas_dist.trajectories.summary import BatchSummary, summarize


def code_isolation(started: Sequence[dict[str, float]]) -> dict[str, float]:
    """``rollout/code_isolation_full`` from the workers' start gauges: 1.0 when every worker's
    machine jails code checks fully, 0.0 when any gives only the separate judge ({} for a task
    that runs no code). Each worker checked ``data.sandbox.require`` on its own machine."""
    full = [g[CODE_ISOLATION] for g in started if CODE_ISOLATION in g]
    return {CODE_ISOLATION: min(full)} if full else {}


class WorkersExhausted(RuntimeError):
    """More rollout worker failures than ``faults.max_worker_restarts`` allows."""


class WorkerPool:
    def __init__(self, cfg: Config, actors: list[Any], say: Callable[[str], None], task: Task | None = None):
        self.cfg, self.actors, self.say = cfg, actors, say
        self.task = task  # re-sent to a worker Ray restarts when it may have been built for another run
        self.restarts = 0
        # Which process each worker is: a restart must not kill a worker Ray already restarted.
        self.incarnations = [p["incarnation"] for p in ray.get([a.process_ids.remote() for a in actors])]
        self._topology: tuple[tuple[int, ...], list[str], GrowthGate | None] | None = None
        self._adapters: ray.ObjectRef[AdapterSet] | None = None  # what every worker holds now
        self.version: int | None = None  # its version: workers only ever move forward from it

    def set_topology(self, widths: Sequence[int], edges: Sequence[str], gate: GrowthGate | None) -> None:
        if self.cfg.program.entry:
            return  # a program's agents are fixed by its config, which every worker holds
        self._topology = topology = (tuple(widths), list(edges), gate)
        self._on_every_worker("setting the topology", lambda w: w.set_topology.remote(*topology))

    def load_adapters(self, adapters: AdapterSet) -> dict[str, float]:
        """Every worker holds ``adapters`` (put in the object store once; a restarted worker gets
        them again). Returns the slowest load and the most adapter versions a worker keeps live."""
        self._adapters = ray.put(adapters)
        self.version = adapters.version
        loads = self._on_every_worker(f"loading adapters v{adapters.version}",
                                      lambda w: w.load_adapters.remote(self._adapters))
        return {key: max(g[key] for g in loads) for key in ("rollout/adapter_load_s", "rollout/live_adapter_versions")
                if loads and all(key in g for g in loads)}

    def shutdown(self) -> None:
        """Close the workers, or park them for this process's next run (``rollout.keep_warm``)."""
        if not warm_pool.give_back(self.actors, reusable=self.restarts == 0):
            shut_down_workers(self.actors)

    def _on_every_worker(self, what: str, call: Callable[[Any], Any]) -> list[Any]:
        """``call`` on every worker; one that dies (or hangs) meanwhile is restarted, and the
        restart itself reloads what this call was bringing. Returns the answers of the workers
        that gave one."""
        answers = []
        for i, ref in enumerate([call(w) for w in self.actors]):
            try:
                answers.append(ray.get(ref, timeout=self.cfg.faults.restart_timeout_s))
            except (RayError, GetTimeoutError) as exc:
                self.restart(i, f"{what}: {short_error(exc)}", hung=isinstance(exc, GetTimeoutError))
        return answers

    def restart(self, i: int, why: str, hung: bool = False, failed_on: str | None = None) -> bool:
        """Bring worker ``i`` back: kill it if its process is still the one that failed (a hung
        or engine-dead worker), wait for Ray's restart, reload topology and adapters. Raises
        WorkersExhausted past the configured budget. ``failed_on``: the incarnation the failed
        call ran on; if the pool has replaced it since (an older stream failing late), nothing
        is restarted and False is returned."""
        f = self.cfg.faults
        if failed_on is not None and failed_on != self.incarnations[i]:
            return False
        self.restarts += 1
        if self.restarts > f.max_worker_restarts:
            raise WorkersExhausted(f"rollout worker {i} failed ({why}) after {f.max_worker_restarts} restarts "
                                   f"(faults.max_worker_restarts)")
        self.say(f"rollout worker {i}: {why}; restarting it ({self.restarts}/{f.max_worker_restarts})")
        actor, failed = self.actors[i], self.incarnations[i]
        if hung or self._incarnation(i, timeout=5.0) == failed:
            try:  # a hung engine would outlive its actor (a stopped process ignores its parent's death)
                ray.get(actor.kill_engine.remote(), timeout=10)
            except Exception:  # noqa: BLE001 - the actor may be as stuck as its engine
                pass
            ray.kill(actor, no_restart=False)
        deadline = time.monotonic() + f.restart_timeout_s
        while (now := self._incarnation(i, timeout=max(1.0, deadline - time.monotonic()))) in (None, failed):
            if time.monotonic() > deadline:
                raise WorkersExhausted(f"rollout worker {i} did not come back within {f.restart_timeout_s:.0f} s "
                                       f"(faults.restart_timeout_s)")
            time.sleep(0.5)
        self.incarnations[i] = now
        try:
            if self.cfg.rollout.keep_warm and self.task is not None:  # Ray rebuilt it from its first run's config
                ray.get(actor.reuse.remote(self.cfg, self.task), timeout=f.restart_timeout_s)
            if self._topology is not None:
                ray.get(actor.set_topology.remote(*self._topology), timeout=f.restart_timeout_s)
            if self._adapters is not None:
                ray.get(actor.load_adapters.remote(self._adapters), timeout=f.restart_timeout_s)
        except Exception as exc:
            raise WorkersExhausted(f"rollout worker {i} failed again while being restarted: "
                                   f"{short_error(exc)}") from exc
        return True

    def heal(self, why: str, failed: bool = True) -> None:
        """Restart the workers Ray replaced behind the pool's back (their topology and adapters
        are gone) or that do not answer. ``failed``: a call over all workers failed without
        saying which; if every worker looks alive, the failure was inside one (an engine), so
        all are restarted."""
        stale = [i for i in range(len(self.actors)) if self._incarnation(i, timeout=10.0) != self.incarnations[i]]
        for i in stale or (range(len(self.actors)) if failed else []):
            self.restart(i, why, hung=not stale)

    def call_healing(self, what: str, call: Callable[[list[Any]], Any]) -> Any:
        """``call(actors)`` over all workers (an evaluation pass); restart the workers that
        failed and call again until it succeeds or the restart budget is spent (WorkersExhausted)."""
        self.heal(f"{what}: replaced since the last broadcast", failed=False)
        while True:
            try:
                return call(self.actors)
            except RayError as exc:
                self.heal(f"{what}: {short_error(exc)}")

    def _incarnation(self, i: int, timeout: float) -> str | None:
        try:
            return ray.get(self.actors[i].process_ids.remote(), timeout=timeout)["incarnation"]
        except Exception:  # noqa: BLE001 - dead, restarting or stuck: no answer is the answer
            return None


@dataclass(frozen=True)
class Arrival:
    """One batch of new samples: per learner rank, the ObjectRef of its piece (None when
    the piece is empty), and the batch's summary."""

    pieces: list[Any]
    summary: BatchSummary


class _Stream:
    def __init__(self, worker: int, gen: Any, work: list[tuple[Example, list[int]]], deadline_s: float,
                 incarnation: str):
        self.worker, self.gen, self.work, self.incarnation = worker, gen, work, incarnation
        self.deadline = time.monotonic() + deadline_s if deadline_s > 0 else float("inf")
        self.held: list[Any] = []  # the current batch's pieces, until its summary arrives


class StepRollout:
    """One step's rollout in flight over the pool's workers (see module doc)."""

    def __init__(self, pool: WorkerPool, step: int, examples: Sequence[Example], n_samples: int,
                 cursor: dict[str, Any]):
        self.pool, self.step, self.n, self.cursor = pool, step, n_samples, cursor
        self.shards = pool.cfg.learner.num_ranks
        self.started = time.perf_counter()
        self.expected = {sample_id(ex.id, k) for ex in examples for k in range(n_samples)}
        self.received: set[str] = set()
        self.faults: Counter = Counter()
        self.streams: list[_Stream] = []
        for i, share in enumerate(split_examples(examples, len(pool.actors))):
            if share:
                self._launch(i, [(ex, list(range(n_samples))) for ex in share])

    def _launch(self, i: int, work: list[tuple[Example, list[int]]]) -> None:
        incarnation = self.pool.incarnations[i]
        gen = self.pool.actors[i].rollout.options(num_returns="streaming").remote(
            self.step, [ex for ex, _ in work], self.n, [ks for _, ks in work], incarnation=incarnation,
            shards=self.shards)
        self.streams.append(_Stream(i, gen, work, self.pool.cfg.faults.rollout_deadline_s, incarnation))

    def batches(self) -> Iterator[Arrival]:
        """Every batch of new samples, in the order they finish."""
        while self.streams:
            timeout = max(0.0, min(s.deadline for s in self.streams) - time.monotonic())
            ready, _ = ray.wait([s.gen for s in self.streams], num_returns=1,
                                timeout=None if timeout == float("inf") else timeout)
            if not ready:
                for s in [s for s in self.streams if time.monotonic() >= s.deadline]:
                    self.faults["faults/hung_workers"] += 1
                    deadline = self.pool.cfg.faults.rollout_deadline_s
                    self._fail(s, f"no end within faults.rollout_deadline_s={deadline:g} s", hung=True)
                continue
            stream = next(s for s in self.streams if s.gen is ready[0])
            item = self._next(stream)
            if item is not None:
                yield item
        missing = self.expected - self.received
        if missing:  # a bug, not a fault: every failure above re-runs what its worker lost
            raise RuntimeError(f"step {self.step}: {len(missing)} samples never arrived, e.g. {sorted(missing)[:3]}")

    def _next(self, stream: _Stream) -> Arrival | None:
        """Take the stream's next object: a piece is held until its batch's summary comes."""
        try:
            ref = next(stream.gen)
            if len(stream.held) < self.shards:
                stream.held.append(ref)
                return None
            summary = ray.get(ref)
        except StopIteration:
            self.streams.remove(stream)
            if self._lost(stream.work):  # ended without error yet short: redo what is missing
                self._fail(stream, "its stream ended early", removed=True)
            return None
        except RayError as exc:
            self._fail(stream, short_error(exc))
            return None
        pieces, stream.held = stream.held, []
        repeats = {k for k in summary.sample_ids if k in self.received}
        arrival: Arrival | None = Arrival([p if n else None for p, n in zip(pieces, summary.piece_rows)], summary)
        if repeats:
            try:
                arrival = self._without(pieces, summary, repeats)
            except RayError as exc:  # its samples stay unreceived: the restart reruns them
                self._fail(stream, short_error(exc))
                return None
        self.received.update(summary.sample_ids)
        return arrival

    def _without(self, pieces: list[Any], summary: BatchSummary, repeats: set[str]) -> Arrival | None:
        """The batch minus samples that already arrived (a rerun raced its first run): the
        one case where the driver reads the rows."""
        kept, dropped = [], 0
        for piece in ray.get(pieces):
            repeated = pc.is_in(piece.column("sample_id"), value_set=pa.array(sorted(repeats)))
            kept.append(piece.filter(pc.invert(repeated)))
            dropped += piece.num_rows - kept[-1].num_rows
        self.faults["faults/duplicate_rows_dropped"] += dropped
        summary = summarize(concat(kept), kept, answer_type_of(self.pool.cfg.data),
                            {k: v for k, v in summary.samples.items() if k not in repeats})
        if not summary.sample_ids:
            return None
        return Arrival([ray.put(p) if p.num_rows else None for p in kept], summary)

    def _lost(self, work: list[tuple[Example, list[int]]]) -> list[tuple[Example, list[int]]]:
        out = []
        for ex, ks in work:
            left = [k for k in ks if sample_id(ex.id, k) not in self.received]
            if left:
                out.append((ex, left))
        return out

    def _fail(self, stream: _Stream, why: str, hung: bool = False, removed: bool = False) -> None:
        if not removed:
            self.streams.remove(stream)
        _cancel(stream.gen)
        if self.pool.restart(stream.worker, f"step {self.step}: {why}", hung=hung, failed_on=stream.incarnation):
            self.faults["faults/worker_restarts"] += 1
        lost = self._lost(stream.work)
        if lost:
            self.faults["faults/rerun_questions"] += len(lost)
            self.faults["faults/rerun_samples"] += sum(len(ks) for _, ks in lost)
            self._launch(stream.worker, lost)

    def cancel(self) -> None:
        """Abandon the step (the learner went back to a checkpoint): stop every stream."""
        for s in self.streams:
            _cancel(s.gen)
        self.streams = []


def _cancel(gen: Any) -> None:
    try:
        ray.cancel(gen)
    except Exception:  # noqa: BLE001 - a finished or dead stream has nothing to cancel
        pass


def short_error(exc: BaseException, limit: int = 200) -> str:
    """``Type: last line`` of the exception that was raised: a RayTaskError's own text is the
    remote traceback, its ``.cause`` the exception itself."""
    root = getattr(exc, "cause", None) or exc
    text = str(root).strip().splitlines()
    return f"{type(root).__name__}: {text[-1][:limit] if text else ''}"
