"""tests/pinned.py itself: a moved number fails, a re-pin writes it, another model build skips."""

from __future__ import annotations

import pinned
import pytest


def test_a_moved_number_fails_a_repin_writes_it_and_another_build_skips(tmp_path, monkeypatch):
    monkeypatch.setattr(pinned, "PINNED", tmp_path / "pinned.json")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setenv("NEUROMAS_REPIN", "1")
    pinned.check_pinned("run", {"step1:reward": 0.25}, model)
    monkeypatch.delenv("NEUROMAS_REPIN")
    pinned.check_pinned("run", {"step1:reward": 0.25}, model)
    with pytest.raises(AssertionError, match="pinned numbers moved"):
        pinned.check_pinned("run", {"step1:reward": 0.375}, model)
    (model / "model.safetensors").write_bytes(b"other weights")  # a build of another CPU kind
    with pytest.raises(pytest.skip.Exception, match="NEUROMAS_REPIN=1"):
        pinned.check_pinned("run", {"step1:reward": 0.25}, model)
