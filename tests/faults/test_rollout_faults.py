"""A rollout worker killed or hung mid-step: Ray restarts it, the driver reloads its
adapters and re-runs exactly the samples that never arrived. The step ends with one row
per (question, sample, node), all sampled with the adapter version the driver broadcast
(never the restarted worker's placeholder zero adapters)."""

from __future__ import annotations

import signal
import time
from collections import Counter

import psutil
import pytest

from neuromas_dist.config import load_config
from neuromas_dist.testing.faults import kill_worker

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.faults]

NODES = ("L0N0", "L0N1", "L1N0")
N_SAMPLES = 4


@pytest.fixture(scope="module")
def fault_cfg(tiny_model_dir):
    return load_config(None, [f"sampling.n_samples={N_SAMPLES}", "sampling.max_new_tokens=24",
                              "rollout.batch_samples=2", "rollout.batch_seconds=0.2",
                              "faults.rollout_deadline_s=20", "faults.max_worker_restarts=3"])


@pytest.fixture(scope="module")
def pool(ray_local, tiny_model_dir, fault_cfg):
    from neuromas_dist.driver.rollouts import WorkerPool
    from neuromas_dist.rollout.actors import start_workers
    from neuromas_dist.rollout.adapters import zero_adapter_set
    from neuromas_dist.tasks import synthetic_task

    said: list[str] = []
    actors = start_workers(fault_cfg, model_dir=str(tiny_model_dir), task=synthetic_task("hier"))
    pool = WorkerPool(fault_cfg, actors, said.append)
    pool.said = said
    pool.set_topology((2, 1), [], None)
    pool.load_adapters(zero_adapter_set(tiny_model_dir, NODES, fault_cfg.lora)._replace(version=5))
    yield pool
    for a in pool.actors:
        ray_local.kill(a, no_restart=True)


def run_step(pool, step, examples, fault):
    """One step's rollout; ``fault(i)`` runs after the i-th batch arrived. Returns the
    batches the learner would get and the step's fault counters."""
    import ray

    from neuromas_dist.driver.rollouts import StepRollout

    rollout = StepRollout(pool, step, examples, N_SAMPLES, cursor={})
    batches = []
    for i, arrival in enumerate(rollout.batches()):
        (piece,) = arrival.pieces  # one learner rank: one piece per batch
        batches.append(ray.get(piece))
        fault(i)
    return batches, rollout.faults


def assert_exactly_once(batches, examples, version):
    rows = Counter()
    for b in batches:
        for sid, node, v in zip(b.column("sample_id").to_pylist(), b.column("node").to_pylist(),
                                b.column("adapter_version").to_pylist()):
            rows[(sid, node)] += 1
            assert v == version, (sid, node, v)  # not the restarted worker's placeholder (-1)
    want = {(f"{ex.id}#{k}", n) for ex in examples for k in range(N_SAMPLES) for n in NODES}
    assert set(rows) == want and set(rows.values()) == {1}


@pytest.mark.parametrize("target", ["actor", "engine"])
def test_a_killed_worker_is_restarted_and_its_lost_samples_rerun_once(pool, fault_examples, target):
    examples = fault_examples[:16] if target == "actor" else fault_examples[16:32]
    import ray

    before = pool.incarnations[0]
    old = ray.get(pool.actors[0].process_ids.remote())
    killed = []

    def fault(i):
        if i == 0:
            killed.append(kill_worker(pool.actors[0], target))

    batches, faults = run_step(pool, 1, examples, fault)
    assert_exactly_once(batches, examples, version=5)
    assert faults["faults/worker_restarts"] == 1 and faults["faults/rerun_samples"] > 0
    assert pool.incarnations[0] != before  # a new process serves, with the broadcast adapters
    assert any("restarting it" in line for line in pool.said)
    time.sleep(2)
    assert not any(alive(p) for p in [old["actor"], *old["engine"]])  # nothing of the old worker lingers


def alive(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def test_a_hung_engine_misses_the_deadline_and_is_replaced(pool, fault_examples):
    """SIGSTOP of the engine process: the worker's actor still answers, its engine never
    does. The deadline declares it hung; the engine is SIGKILLed (a stopped process would
    outlive its actor) and the worker restarted."""
    examples = fault_examples[32:40]
    stopped = []

    def fault(i):
        if i == 0:
            stopped.append(kill_worker(pool.actors[0], "engine", signal.SIGSTOP))

    t0 = time.monotonic()
    batches, faults = run_step(pool, 2, examples, fault)
    assert_exactly_once(batches, examples, version=5)
    assert faults["faults/hung_workers"] == 1 and faults["faults/worker_restarts"] == 1
    assert time.monotonic() - t0 >= 20  # it waited for the deadline, not less
    time.sleep(2)
    assert not alive(stopped[0])
