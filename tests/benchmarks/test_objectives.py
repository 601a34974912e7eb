"""benchmarks.objectives: every arm is a valid config that differs from the default run
only in its stated learner keys, and the timing it reports is read from metrics.jsonl."""

from __future__ import annotations

import dataclasses
import json

import pytest

from benchmarks import objectives
from neuromas_dist.config import Config, load_config


@pytest.mark.parametrize("arm", [*objectives.ARMS, *objectives.PEER_ARMS])
def test_each_arm_is_the_default_run_but_its_stated_keys(arm, tmp_path):
    cmd = objectives.command(arm, 1, tmp_path, ["trainer.steps=30"])
    overrides = [a for a in cmd[cmd.index("--run-dir") + 2:]]
    cfg, default = load_config(None, overrides), Config()
    changed = {f"{section}.{f.name}" for section in ("learner", "topology", "sampling", "trainer")
               for f in dataclasses.fields(getattr(cfg, section))
               if getattr(getattr(cfg, section), f.name) != getattr(getattr(default, section), f.name)}
    stated = {o.split("=")[0] for o in {**objectives.ARMS, **objectives.PEER_ARMS}[arm]}
    assert changed - {"trainer.seed"} == {k for k in stated if load_value(cfg, k) != load_value(default, k)}
    assert cfg.learner.lr == default.learner.lr  # no arm is tuned
    assert cmd[cmd.index("--run-dir") + 1] == str(tmp_path / arm / "seed1")


def load_value(cfg, key: str):
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def test_run_timing_leaves_the_held_out_passes_out(tmp_path):
    rows = [{"step": 1, "timing_s/step": 3.0, "timing_s/learn": 1.0, "rollout/response_tokens": 300},
            {"step": 2, "timing_s/step": 9.0, "timing_s/eval": 6.0, "timing_s/learn": 2.0,
             "rollout/response_tokens": 300},
            {"step": 2, "eval/accuracy": 0.5}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert objectives.run_timing(tmp_path) == {"step_s": 3.0, "learner_s": 1.5, "tokens_per_s": 100.0}
