"""An agent program's worker killed mid-step: Ray restarts it, the driver re-runs exactly the
samples that never arrived, and every sample's calls are rows exactly once (a program's
sample is several calls of several agents; a rerun must not add a second copy of any)."""

from __future__ import annotations

from collections import Counter

import pytest

from neuromas_dist.config import load_config
from neuromas_dist.testing.faults import kill_worker

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.faults]

AGENTS = ("solver", "verifier")
N_SAMPLES = 2


@pytest.fixture(scope="module")
def program_pool(ray_local, tiny_model_dir, monkeypatch_module):
    from neuromas_dist.driver.rollouts import WorkerPool
    from neuromas_dist.rollout.actors import start_workers
    from neuromas_dist.rollout.adapters import random_b_adapter_set, zero_adapter_set
    from neuromas_dist.tasks import synthetic_task

    cfg = load_config(None, [f"sampling.n_samples={N_SAMPLES}", "sampling.max_new_tokens=16",
                             "rollout.batch_samples=2", "rollout.batch_seconds=0.2", "faults.max_worker_restarts=2",
                             "program.entry=examples.programs.solver_verifier:solve", f"program.agents={list(AGENTS)}"])
    said: list[str] = []
    pool = WorkerPool(cfg, start_workers(cfg, model_dir=str(tiny_model_dir), task=synthetic_task("hier")), said.append)
    pool.said = said
    pool.load_adapters(random_b_adapter_set(zero_adapter_set(tiny_model_dir, AGENTS, cfg.lora), 3, seed=2))
    yield pool
    for a in pool.actors:
        ray_local.kill(a, no_restart=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    """The program is imported by module path in the Ray worker: run from the repository root."""
    from pathlib import Path

    mp = pytest.MonkeyPatch()
    mp.chdir(Path(__file__).resolve().parents[2])
    yield mp
    mp.undo()


def test_a_killed_program_worker_reruns_its_lost_samples_once(program_pool, fault_examples):
    import ray

    from neuromas_dist.driver.rollouts import StepRollout

    examples = fault_examples[40:52]
    rollout = StepRollout(program_pool, 1, examples, N_SAMPLES, cursor={})
    rows: Counter = Counter()
    arrived: list[str] = []
    for i, arrival in enumerate(rollout.batches()):
        (piece,) = arrival.pieces
        arrived += arrival.summary.sample_ids
        if piece is not None:
            batch = ray.get(piece)
            for key in zip(*(batch.column(c).to_pylist() for c in ("sample_id", "node", "call_index",
                                                                  "adapter_version"))):
                rows[key] += 1
        if i == 0:
            kill_worker(program_pool.actors[0], "actor")
    assert rollout.faults["faults/worker_restarts"] == 1 and rollout.faults["faults/rerun_samples"] > 0
    assert sorted(arrived) == sorted(f"{ex.id}#{k}" for ex in examples for k in range(N_SAMPLES))
    assert set(rows.values()) == {1}  # no call twice
    assert {v for (_, _, _, v) in rows} == {3}  # all sampled by the broadcast version, none by the placeholder
    per_sample: dict = {}
    for sid, node, index, _ in sorted(rows, key=lambda k: (k[0], k[1], k[2])):
        per_sample.setdefault(sid, []).append((node, index))
    for calls in per_sample.values():  # whole samples: the solver's and the verifier's calls, numbered from 0
        assert ("solver", 0) in calls and ("verifier", 0) in calls
        assert sorted(i for n, i in calls if n == "solver") == list(range(sum(n == "solver" for n, _ in calls)))
