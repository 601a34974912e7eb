"""Synthetic trajectory batches and small configs for the learner tests."""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

import pyarrow as pa

from neuromas_dist.config import Config
from neuromas_dist.trajectories.schema import TrajectoryRow, make_row, to_record_batch

NODES = ("L0N0", "L0N1", "L1N0")


def small_config(**learner) -> Config:
    """Rank 4 adapters on two modules keep a step well under a second on the tiny model.
    float32 on every device: these tests assert exactness (``dtype=auto`` is bf16 on a GPU;
    the bf16 path has its own tests in test_gpu.py)."""
    cfg = Config()
    lora = dataclasses.replace(cfg.lora, rank=4, alpha=8.0, target_modules=("q_proj", "v_proj"))
    sampling = dataclasses.replace(cfg.sampling, n_samples=2, temperature=1.0)
    base = dict(lr=1e-2, micro_batch_size=4, max_logprob_gap=10.0, baseline="loo")
    base.update(learner)
    return dataclasses.replace(cfg, lora=lora, sampling=sampling, model=dataclasses.replace(cfg.model, dtype="float32"),
                               learner=dataclasses.replace(cfg.learner, **base))


def make_batch(n_questions: int = 4, n_samples: int = 2, nodes: Sequence[str] = NODES, *, seed: int = 0,
               vocab: int = 300, version: int = 0, rewards: dict | None = None,
               logprobs: float = -5.0, step: int = 0) -> pa.RecordBatch:
    """One row per (question, sample, node); random token ids; reward per sample."""
    rng = random.Random(seed)
    rows = []
    for q in range(n_questions):
        for k in range(n_samples):
            sid = f"q{q}#{k}"
            reward = rewards[sid] if rewards and sid in rewards else float(rng.random() < 0.5)
            for node in nodes:
                p, t = rng.randint(3, 9), rng.randint(1, 6)
                rows.append(make_row(
                    node, f"q{q}", k, step=step, prompt_ids=[rng.randrange(3, vocab) for _ in range(p)],
                    response_ids=[rng.randrange(3, vocab) for _ in range(t)], logprobs=[logprobs] * t,
                    adapter_version=version, reward=reward))
    return to_record_batch(rows)


def program_batch(n_questions: int = 4, n_samples: int = 2, nodes: Sequence[str] = NODES, *, seed: int = 0,
                  vocab: int = 300, step: int = 0) -> pa.RecordBatch:
    """Rows as an agent program makes them: in each sample every agent is called 0, 1, 2 or 3
    times (``call_index`` 0..), its calls interleaved with the others'; reward per sample."""
    rng = random.Random(seed)
    rows = []
    for q in range(n_questions):
        for k in range(n_samples):
            reward = float(rng.random() < 0.5)
            calls = [node for node in nodes for _ in range(rng.choice((0, 1, 2, 3)))]
            rng.shuffle(calls)
            index: dict[str, int] = {}
            for node in calls:
                p, t = rng.randint(3, 9), rng.randint(1, 6)
                rows.append(make_row(
                    node, f"q{q}", k, step=step, call_index=index.setdefault(node, 0),
                    prompt_ids=[rng.randrange(3, vocab) for _ in range(p)],
                    response_ids=[rng.randrange(3, vocab) for _ in range(t)], reward=reward))
                index[node] += 1
    return to_record_batch(rows)


def with_logprobs(batch: pa.RecordBatch, logprobs: list[list[float]]) -> pa.RecordBatch:
    """``batch`` with its logprobs column replaced (e.g. by the learner's own: gap 0)."""
    idx = batch.schema.get_field_index("logprobs")
    col = pa.array(logprobs, type=batch.schema.field("logprobs").type)
    return batch.set_column(idx, batch.schema.field("logprobs"), col)


def with_column(batch: pa.RecordBatch, name: str, values: list) -> pa.RecordBatch:
    idx = batch.schema.get_field_index(name)
    field = batch.schema.field(name)
    return batch.set_column(idx, field, pa.array(values, type=field.type))


def to_batch(rows: list[dict]) -> pa.RecordBatch:
    """Plain row dicts (as from ``to_pylist``) back into a trajectory batch."""
    return to_record_batch([TrajectoryRow(**row) for row in rows])


def captured_step(rank, batch, pieces: int = 3, metrics: bool = False):
    """Stream ``batch`` in ``pieces`` and finish the step; returns every LoRA tensor's
    gradient as DeepSpeed holds it when its optimizer step runs (and the step's metrics
    with ``metrics``)."""
    updates, out = captured_updates(rank, batch, pieces)
    seen = updates[-1]["grads"] if updates else {}
    return (seen, out) if metrics else seen


def captured_updates(rank, batch, pieces: int = 3):
    """Stream ``batch`` in ``pieces`` and finish the step; returns ([per optimizer step:
    its ``grads`` as DeepSpeed holds them and the ``adapters`` its forward ran under], the
    step's metrics). One entry per step under reinforce, epochs x mini_batches under ppo_clip."""
    updates: list[dict] = []
    step = rank.engine.step

    def capture(*args, **kwargs):
        grads = {name: p.grad.detach().clone() for name, p in rank.module.named_parameters()
                 if "lora_" in name and p.grad is not None}
        updates.append({"grads": grads, "adapters": rank.export()})
        return step(*args, **kwargs)

    rank.engine.step = capture
    try:
        n, ids = batch.num_rows, batch.column("sample_id").to_pylist()
        # cut anywhere, even mid-question, but never inside a sample: a worker sends whole samples
        cuts = sorted({next(j for j in range(round(i * n / pieces), n + 1) if j in (0, n) or ids[j] != ids[j - 1])
                       for i in range(pieces + 1)})
        for a, b in zip(cuts, cuts[1:]):
            rank.accumulate(batch.slice(a, b - a))
        out = rank.finish_step()
    finally:
        rank.engine.step = step
    return updates, out
