"""Session-wide fixtures: the tiny model (built once) and one embedded Ray runtime.

Engines are expensive here (~20 s to start a vLLM CPU engine), so every fixture that
starts one is session-scoped and shared; tests must not start their own when a fixture
fits.
"""

from __future__ import annotations

import os

import pytest
from small_run import SMALL_RUN, WARM

# Set before anything imports vLLM/DeepSpeed: these are read at import or start time.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per engine: several engines share 24 GB
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub access: a test that reaches for it must fail fast
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


# In-process learner ranks follow DeepSpeed's accelerator (learner.model.on_cuda): CUDA where
# a GPU is visible, so the same tests check the GPU path there; pinned to the CPU elsewhere
# so DeepSpeed does not go probing. Ray actors and spawned ranks set their own.
if not _has_gpu():
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir():
    """Path of the locally built tiny Qwen3 (built on first use, cached after)."""
    from neuromas_dist.models.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the whole session; logical CPUs exceed the 2 real cores on
    purpose so several 1-CPU actors (workers, learner ranks) can coexist in a test."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1",
                                           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}})
    yield ray
    from neuromas_dist.rollout import warm_pool

    warm_pool.release()  # the last in-process run's parked workers, while Ray can still close them
    ray.shutdown()


@pytest.fixture(scope="session")
def trained_run(ray_local, tiny_model_dir, tmp_path_factory):
    """A finished 2-step run of the default graph on the real stack (about a minute),
    shared by the end-to-end checks and the commands that read a run directory (evaluate,
    serve, generate). It logs to W&B offline and to a local MLflow store too. Tests copy
    it before changing anything in it."""
    from neuromas_dist.config import load_config
    from neuromas_dist.driver.run import run_training

    run_dir = tmp_path_factory.mktemp("trained") / "sync"
    trackers = ["logging.wandb_project=neuromas-tests", "logging.wandb_mode=offline",
                f"logging.mlflow_tracking_uri=file://{run_dir}/mlruns", "logging.tags=[ci,tiny]"]
    cfg = load_config(None, [*SMALL_RUN, WARM, f"logging.run_dir={run_dir}", "trainer.steps=2",
                             "trainer.checkpoint_every=1", "learner.lr=0.01", *trackers])
    assert run_training(cfg) == 0
    return run_dir
