"""How the driver assembles a step from the workers' streams without reading rows: pieces
pass through per rank as ObjectRefs, summaries count samples, and a batch that repeats
samples (a rerun racing its first run) is the one the driver reads, to drop the repeats.

The worker here is a small Ray actor speaking the rollout workers' stream protocol
(pieces, then the summary); the real worker's stream is tested in
tests/rollout/test_worker_engine.py and end to end in tests/faults/."""

from __future__ import annotations

from collections import Counter, namedtuple

import pytest

from neuromas_dist.config import load_config
from neuromas_dist.trajectories.schema import concat, make_row, to_record_batch
from neuromas_dist.trajectories.shards import owner_rank, split_by_owner
from neuromas_dist.trajectories.summary import StepTally, summarize

pytestmark = pytest.mark.ray

Example = namedtuple("Example", "id")
NODES = ("L0N0", "L1N0")


def _rows(step, qid, k):
    return [make_row(node, qid, k, step=step, response_ids=[2, 3], logprobs=[-1.0, -2.0], parsed_answer="1",
                     reward=1.0) for node in NODES]


class StreamingWorker:
    """Every sample of its work in two batches; with ``repeat``, the second batch carries
    the first sample again."""

    def __init__(self, repeat: bool):
        self.repeat = repeat

    def process_ids(self):
        return {"incarnation": "only"}

    def rollout(self, step, examples, n, indices, incarnation=None, shards=1):
        samples = [(ex.id, k) for ex, ks in zip(examples, indices) for k in ks]
        half = len(samples) // 2
        for part in (samples[:half], samples[half:] + samples[:1] * self.repeat):
            batch = to_record_batch([r for q, k in part for r in _rows(step, q, k)])
            pieces = split_by_owner(batch, shards)
            for piece in pieces:  # not `yield from`: Ray drives the generator with send()
                yield piece
            yield summarize(batch, pieces)


@pytest.mark.parametrize("repeat", [False, True])
def test_a_step_holds_every_row_once_each_piece_for_its_rank(ray_local, repeat):
    import sys

    from neuromas_dist.driver.rollouts import StepRollout, WorkerPool

    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # a test module: not importable by workers
    cfg = load_config(None, ["learner.num_ranks=2", "faults.restart_timeout_s=5"])
    actor = ray_local.remote(StreamingWorker).remote(repeat)
    pool = WorkerPool(cfg, [actor], print)
    examples = [Example(f"q{i}") for i in range(6)]
    rollout = StepRollout(pool, 4, examples, 3, cursor={})
    arrivals = list(rollout.batches())

    rows, tally, rewritten = Counter(), StepTally(), 0
    driver_task = ray_local.put(None).task_id()  # an object the driver makes names the driver's task
    for arrival in arrivals:
        tally.add(arrival.summary)
        assert len(arrival.pieces) == 2
        made_by_driver = {ref.task_id() == driver_task for ref in arrival.pieces if ref is not None}
        assert len(made_by_driver) == 1
        rewritten += made_by_driver.pop()
        for rank, ref in enumerate(arrival.pieces):
            if ref is None:
                continue
            piece = ray_local.get(ref)
            assert {owner_rank(q, 2) for q in piece.column("question_id").to_pylist()} == {rank}
            rows.update(zip(piece.column("sample_id").to_pylist(), piece.column("node").to_pylist()))
    assert set(rows) == {(f"q{i}#{k}", n) for i in range(6) for k in range(3) for n in NODES}
    assert set(rows.values()) == {1}
    assert rollout.faults["faults/duplicate_rows_dropped"] == (len(NODES) if repeat else 0)
    # the worker's objects go on untouched; only the batch with the repeat was read and rewritten
    assert rewritten == (1 if repeat else 0)
    # the summaries describe exactly the rows that went on, repeats excluded
    whole = StepTally()
    whole.add(summarize(concat([to_record_batch(_rows(4, f"q{i}", k)) for i in range(6) for k in range(3)])))
    assert tally.metrics() == whole.metrics()
    ray_local.kill(actor)


def test_a_piece_lost_with_its_node_is_a_lost_step_not_a_crash():
    """The driver does not copy rows: a rollout node lost before a learner rank fetched its
    piece fails the rank's task with an ObjectLostError (or one wrapping it). The trainer
    reads that as a lost step and replays it from the checkpoint; other errors stay errors."""
    from ray.exceptions import ObjectLostError, OwnerDiedError

    from neuromas_dist.driver.trainer import lost_object

    lost = ObjectLostError("ab" * 28, None, "")
    assert lost_object(lost) and lost_object(OwnerDiedError("ab" * 28, None, ""))

    class Wrapped(Exception):
        cause = lost

    assert lost_object(Wrapped())
    assert not lost_object(ValueError("trajectory batch: column 'reward' is missing"))


def test_a_runs_code_isolation_is_its_weakest_workers():
    """rollout/code_isolation_full in each step's row: 0.0 as soon as one worker's machine
    gives less than full isolation; nothing for a task that runs no code."""
    from neuromas_dist.driver.rollouts import code_isolation
    from neuromas_dist.rollout.worker import CODE_ISOLATION

    assert code_isolation([{}, {"rollout/seconds": 1.0}]) == {}
    assert code_isolation([{CODE_ISOLATION: 1.0}, {CODE_ISOLATION: 1.0}]) == {CODE_ISOLATION: 1.0}
    assert code_isolation([{CODE_ISOLATION: 1.0}, {CODE_ISOLATION: 0.0}]) == {CODE_ISOLATION: 0.0}
