"""The command line as a user runs it, in subprocesses: a worker lost past its restart
budget, and the cluster form under `ray job submit` against a three-node Ray cluster on this machine
(a `ray start --head` and two `ray start --address` raylets), one node of which is lost."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from driver_helpers import SMALL

from neuromas_dist.testing.faults import audit, descendants, launch, launch_env, steps_logged, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.vllm]

REPO = Path(__file__).resolve().parents[2]


def disturb_after_step_1(run_dir: Path, steps: int, disturb, *overrides: str) -> tuple[int, str]:
    """Launch a run, call ``disturb(proc)`` once step 1 is logged; (exit code, output)."""
    proc = launch("--run-dir", str(run_dir), *SMALL, f"trainer.steps={steps}", "trainer.checkpoint_every=0",
                  *overrides, cwd=REPO)
    try:
        wait_for(lambda: 1 in steps_logged(run_dir), 400, proc)
        disturb(proc)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    return proc.returncode, out


def kill_rollout_workers(proc: subprocess.Popen) -> None:
    # The embedded Ray's processes are the launcher's descendants: kill its rollout actor.
    workers = descendants(proc, "RolloutWorker")
    assert workers
    for w in workers:
        w.kill()


def test_a_worker_death_past_the_restart_budget_stops_the_run_with_a_checkpoint_and_one_line(tiny_model_dir, tmp_path):
    """With restarts allowed a dead worker is replaced (tests/faults); with none left the
    run stops as a person can act on it."""
    run_dir = tmp_path / "run"
    code, out = disturb_after_step_1(run_dir, 50, kill_rollout_workers, "faults.max_worker_restarts=0")
    assert code == 1, out[-3000:]
    failed = [line for line in out.splitlines() if "failed at step" in line]
    assert len(failed) == 1 and f"--resume {run_dir}" in failed[0] and "checkpoint " in failed[0]
    assert "Traceback" not in out
    assert list((run_dir / "checkpoints").glob("step_*"))  # the learner was alive: its state is saved


@pytest.fixture
def ray_cluster():
    """A three-node Ray cluster on this machine: the head from cluster/local_head.sh offering
    the custom resource learner_node, and two more raylets (`ray start --address`) offering
    rollout_node, all in one temp dir, so stopping them cannot touch the test session's
    embedded Ray (which `ray stop` would kill too). Yields (dashboard address, temp dir)."""
    temp_dir = tempfile.mkdtemp(prefix="nmh", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    # A lost node is declared dead after 3 missed 1 s health checks instead of 5 x 3 s.
    head_env = {**launch_env(), "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
    # Own ports too: the session's embedded Ray already holds the dashboard agent's
    # default port 52365, and a head whose agent cannot bind refuses every job.
    start = subprocess.run([str(REPO / "cluster" / "local_head.sh"), "start", "--port", str(port),
                            "--dashboard-port", "8265", "--dashboard-agent-listen-port", str(free_port()),
                            "--temp-dir", temp_dir, "--resources", '{"learner_node": 1}'],
                           env=head_env, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        # Each other node gets its own temp dir, as its own disk: nodes sharing one session dir
        # share the unpacked job working_dir too, and a node's runtime-env agent deletes it
        # once that node stops using it, under the feet of the driver on the head (seen: the
        # driver's next import failed). Inside the head's dir, so stop_processes_under finds them.
        for i in range(2):
            node = subprocess.run(["ray", "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "2",
                                   "--resources", '{"rollout_node": 1}', "--dashboard-agent-listen-port",
                                   str(free_port()), "--temp-dir", f"{temp_dir}/n{i}", "--disable-usage-stats"],
                                  env={**launch_env(), "RAY_AUTH_MODE": "token"}, capture_output=True, text=True,
                                  timeout=180)
            assert node.returncode == 0, node.stdout + node.stderr
        yield "http://127.0.0.1:8265", temp_dir
    finally:
        stop_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_processes_under(temp_dir: str) -> None:
    """Every process of the head started in ``temp_dir`` (their command lines name it)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 0)):
        subprocess.run(["pkill", f"-{sig.value}", "-f", temp_dir], capture_output=True)
        time.sleep(wait)


def submit(address: str, *args: str) -> subprocess.Popen:
    """`cluster/submit.sh ARGS` once the head's job agent takes jobs (`ray start` returns
    before it is up, and a job submitted earlier is refused, not queued)."""
    for _ in range(30):
        agent = subprocess.run(["ray", "job", "list", "--address", address],
                               env={**launch_env(), "RAY_AUTH_MODE": "token"},
                               capture_output=True, text=True, timeout=60)
        if agent.returncode == 0:
            break
        time.sleep(2)
    return subprocess.Popen([str(REPO / "cluster" / "submit.sh"), *args], cwd=REPO,
                            env={**launch_env(), "RAY_ADDRESS": address}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def kill_node_of_rollout_worker(temp_dir: str) -> int:
    """SIGKILL, like a machine lost, the raylet whose worker process holds the rollout
    actor, with everything it started (its workers, their vLLM engines, its agents).
    Returns the raylet's pid."""
    import psutil

    for proc in psutil.process_iter():
        try:
            if "RolloutWorker" not in " ".join(proc.cmdline()):
                continue
            raylet = proc.parent()
            if raylet is None or "raylet" not in raylet.name() or temp_dir not in " ".join(raylet.cmdline()):
                continue
            victims = [raylet, *raylet.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for v in victims:
            try:
                v.kill()
            except psutil.NoSuchProcess:
                pass
        return raylet.pid
    raise AssertionError("no rollout worker process under a raylet of this cluster")


def test_ray_job_submit_places_actors_by_node_and_survives_losing_a_rollout_node(ray_cluster, tiny_model_dir, tmp_path):
    """`ray job submit` to a three-node cluster; the config puts rollout workers on the
    nodes offering rollout_node and the learner on the one offering learner_node. Ray's
    state API says where every actor ran. Mid-run the node holding the rollout worker is
    killed: the worker comes back on the other rollout node and the run finishes with
    every step once and every trajectory row once."""
    address, temp_dir = ray_cluster
    run_dir = tmp_path / "job"
    steps = 3
    proc = submit(address, "--run-dir", str(run_dir), *SMALL, f"trainer.steps={steps}", "trainer.eval_every=0",
                  "trainer.final_ablation=false", "resources.rollout_node_resource=rollout_node",
                  "resources.learner_node_resource=learner_node")
    try:
        wait_for(lambda: 1 in steps_logged(run_dir), 600, proc)
        first = where_actors_ran(address)
        kill_node_of_rollout_worker(temp_dir)
        out, _ = proc.communicate(timeout=900)
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-4000:]
    assert "succeeded" in out
    assert "| joined " in out  # the job's driver joined the head, not an embedded Ray
    assert "restarting it" in out and "Traceback" not in out
    run = audit(run_dir)
    assert (run["rows"], run["rows_duplicated"], run["steps_lost"]) == (run["rows_expected"], 0, 0)
    assert run["worker_restarts"] >= 1

    last = where_actors_ran(address)
    for ran in (first, last):
        assert ran["kinds"] == {"RolloutWorker": ["rollout_node"], "LearnerRank": ["learner_node"]}
    # the worker now lives on the other rollout node
    assert first["nodes"]["RolloutWorker"] != last["nodes"]["RolloutWorker"]
    assert first["nodes"]["LearnerRank"] == last["nodes"]["LearnerRank"]


WHERE = """
import json, sys
from ray.util.state import list_actors, list_nodes
kind = {n.node_id: [k for k in ("rollout_node", "learner_node") if k in n.resources_total]
        for n in list_nodes(address=sys.argv[1])}
kinds, nodes = {}, {}
for a in list_actors(address=sys.argv[1], limit=1000):  # a dead actor names the node it ran on last
    if a.class_name in ("RolloutWorker", "LearnerRank"):
        kinds.setdefault(a.class_name, set()).update(kind.get(a.node_id, ["?"]))
        nodes.setdefault(a.class_name, set()).add(a.node_id)
print(json.dumps({"kinds": {k: sorted(v) for k, v in kinds.items()},
                  "nodes": {k: sorted(v) for k, v in nodes.items()}}))
"""


def where_actors_ran(address: str) -> dict:
    """Node kinds and node ids each actor class runs on (or ran on last), from Ray's state
    API. In a subprocess: the head authenticates every client (RAY_AUTH_MODE=token), and
    Ray reads that once per process."""
    done = subprocess.run([sys.executable, "-c", WHERE, address], env={**launch_env(), "RAY_AUTH_MODE": "token"},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
