"""Fault injection against the real stack: Ray actors, vLLM CPU engines, the DeepSpeed
learner. Faults are real: SIGKILL of a worker's actor process or of its vLLM engine
process, SIGSTOP of an engine (a hang), SIGKILL of a learner rank or of the launcher.
Each restart of a worker costs an engine start (~25 s here), so tests share what they
can and inject few faults."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def fault_examples():
    from neuromas_dist.tasks import make_synthetic

    return make_synthetic("hier", "train", 64, 0)
