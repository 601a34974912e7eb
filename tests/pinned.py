"""Exact numbers of the seeded toy runs, so a silent numerical change fails a test.

The seeded CPU runs are deterministic to the last digit on one machine, but the tiny model a
machine builds differs by CPU vendor (docs/tiny_model.md), so the numbers are keyed by the
sha256 of the model's weights. A build with no pinned numbers skips the comparison and says so.

To re-pin after an intended change (or on a new kind of machine): run the pinned tests with
``NEUROMAS_REPIN=1``, e.g. ``NEUROMAS_REPIN=1 .venv/bin/python -m pytest tests/driver/test_e2e.py
-k pinned``; it writes tests/pinned.json; commit it and say in the commit why the numbers moved.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

PINNED = Path(__file__).with_name("pinned.json")


def model_sha(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def check_pinned(name: str, values: dict[str, Any], model_dir: Path) -> None:
    """``values`` equal the ones pinned under ``name`` for this model build (or are pinned now)."""
    sha = model_sha(model_dir)
    pins = json.loads(PINNED.read_text()) if PINNED.is_file() else {}
    if os.environ.get("NEUROMAS_REPIN"):
        pins.setdefault(sha, {})[name] = values
        PINNED.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        return
    if name not in pins.get(sha, {}):
        pytest.skip(f"no pinned {name} for the tiny model built here (sha256 {sha[:12]}); "
                    f"NEUROMAS_REPIN=1 writes them (tests/pinned.py)")
    assert values == pins[sha][name], "pinned numbers moved: re-pin only after an intended change (tests/pinned.py)"
