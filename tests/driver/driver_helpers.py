"""Shared by the end-to-end driver tests: a run small enough for a minute on 2 cores.
(24 new tokens: the sink's reply on the default task is 20; shorter cuts every answer.)"""

from __future__ import annotations

import json
from pathlib import Path

from small_run import SMALL_RUN as SMALL  # noqa: E402 - re-exported for the driver tests


def metrics(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl ([] before the first one is written)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
