"""The learner rank in-process (world size 1): loss, isolation, skips, gap, stale rows, export, growth."""

from __future__ import annotations

import math

import pytest
import torch
from learner_helpers import NODES, captured_step, make_batch, small_config, with_column, with_logprobs

from neuromas_dist.learner.rank import LogprobGapError


def _on_policy(rank, batch):
    """The batch with the learner's own logprobs: what an agreeing rollout would record."""
    return with_logprobs(batch, rank.score(batch))


def _changed(before, after):
    return {n: any(not torch.equal(before.tensors[n][k], after.tensors[n][k]) for k in before.tensors[n])
            for n in before.tensors}


@pytest.fixture(scope="module")
def rank(make_rank):
    return make_rank(small_config())


def test_loss_metric_equals_hand_computed_loss(make_rank, vocab):
    r = make_rank(small_config(baseline="loo", loss_norm="token"))
    # q0: rewards [1, 0] -> loo advantages [1, -1]; q1: [1, 1] -> [0, 0]
    rewards = {"q0#0": 1.0, "q0#1": 0.0, "q1#0": 1.0, "q1#1": 1.0}
    batch = _on_policy(r, make_batch(2, 2, vocab=vocab, rewards=rewards, seed=3))
    lps = r.score(batch)
    rows = batch.to_pylist()
    adv_of = {"q0#0": 1.0, "q0#1": -1.0, "q1#0": 0.0, "q1#1": 0.0}
    # loss = -sum_rows A * sum_t lp / total tokens
    total = sum(len(x) for x in lps)
    expect = -sum(adv_of[row["sample_id"]] * sum(lp) for row, lp in zip(rows, lps)) / total
    r.accumulate(batch)
    m = r.finish_step()
    assert m["learner/loss"] == pytest.approx(expect, rel=1e-5, abs=1e-6)
    assert m["node/L0N0/advantage_mean"] == pytest.approx(0.0, abs=1e-9)  # (1 - 1 + 0 + 0) / 4
    assert m["node/L0N0/logprob_gap"] < 1e-4 and m["learner/skipped_steps"] == 0
    assert m["learner/grad_norm"] > 0 and math.isfinite(m["learner/tokens_per_s"])


def test_only_node_with_advantage_changes(make_rank, vocab):
    r = make_rank(small_config(baseline="loo"))
    batch = _on_policy(r, make_batch(3, 2, vocab=vocab, seed=5))
    # node L0N1's rows get rewards that differ within each question, the others' are all 1:
    # loo gives every other node advantage 0, so its gradient is exactly 0.
    rewards = [float(row["sample_index"] == 0) if row["node"] == "L0N1" else 1.0 for row in batch.to_pylist()]
    before = r.export()
    r.accumulate(with_column(batch, "reward", rewards))
    r.finish_step()
    assert _changed(before, r.export()) == {"L0N0": False, "L0N1": True, "L1N0": False}


def test_planted_nan_is_skipped_and_counted(rank, vocab):
    batch = _on_policy(rank, make_batch(2, 2, vocab=vocab, seed=7))
    rewards = [float("nan") if i == 1 else 1.0 for i in range(batch.num_rows)]
    before, skipped = rank.export(), rank.skipped_steps
    rank.accumulate(with_column(batch, "reward", rewards))
    m = rank.finish_step()
    assert m["learner/skipped_steps"] == skipped + 1 and math.isnan(m["learner/grad_norm"])
    assert not any(_changed(before, rank.export()).values())
    # the next clean step applies again
    rank.accumulate(_on_policy(rank, make_batch(2, 2, vocab=vocab, seed=8)))
    assert rank.finish_step()["learner/skipped_steps"] == skipped + 1
    assert any(_changed(before, rank.export()).values())


def test_logprob_gap_fails_loudly_naming_the_node(make_rank, vocab, tmp_path):
    r = make_rank(small_config(max_logprob_gap=0.1), traj_dir=str(tmp_path))
    batch = _on_policy(r, make_batch(2, 2, vocab=vocab, seed=9))
    # L1N0's recorded logprobs are off by 1 nat, as if the rollout had used another adapter
    lps = [[x - 1.0 for x in lp] if row["node"] == "L1N0" else lp
           for row, lp in zip(batch.to_pylist(), batch.column("logprobs").to_pylist())]
    before = r.export()
    r.accumulate(with_logprobs(batch, lps))
    with pytest.raises(LogprobGapError, match="L1N0") as err:
        r.finish_step()
    assert "L0N0" not in str(err.value)
    assert not any(_changed(before, r.export()).values())
    assert list(tmp_path.iterdir()) == [], "a failed step leaves no trajectory file, finished or partial"


def test_stale_rows_of_a_version_no_longer_held_are_weighted_not_gap_checked(make_rank, vocab):
    r = make_rank(small_config(max_logprob_gap=0.1, importance_cap=2.0))
    # version -1 != learner version 0, and not among the versions the learner keeps:
    # stale, logprobs far off (-5), weighted, no failure (tests/learner/test_vllm_roundtrip
    # checks the stale rows of a version it does keep)
    r.accumulate(make_batch(2, 2, vocab=vocab, seed=11, version=-1, logprobs=-5.0))
    m = r.finish_step()
    assert m["node/L0N0/stale_token_frac"] == 1.0 and math.isnan(m["node/L0N0/logprob_gap"])
    assert 0 < m["node/L0N0/importance_weight_mean"] <= 2.0


@pytest.mark.parametrize("baseline", ["batch_mean", "ema", "loo"])
def test_streaming_in_pieces_equals_one_batch(make_rank, vocab, baseline):
    """Whole step at once vs. three streamed pieces (loo waits for whole questions;
    batch_mean / first-step ema fix their step constant at the end): same update."""
    cfg = small_config(baseline=baseline, micro_batch_size=3)
    r = make_rank(cfg)
    batch = _on_policy(r, make_batch(4, 2, vocab=vocab, seed=13))
    start = r.get_state()
    whole, whole_metrics = captured_step(r, batch, pieces=1, metrics=True)
    r.set_state(start["adapters"], start["learner"], start)
    pieces, pieces_metrics = captured_step(r, batch, pieces=3, metrics=True)
    # what DeepSpeed receives; passes group rows differently (the longest ready rows first),
    # so the sums differ in rounding only
    assert set(pieces) == set(whole)
    for name, g in whole.items():
        assert (pieces[name] - g).norm() <= 1e-5 * max(g.norm().item(), 1e-8), name
    assert pieces_metrics["learner/loss"] == pytest.approx(whole_metrics["learner/loss"], rel=1e-5, abs=1e-7)


def test_ema_baseline_state_advances(make_rank, vocab):
    r = make_rank(small_config(baseline="ema", ema_decay=0.5))
    rewards = {f"q{q}#{k}": float(k == 0) for q in range(2) for k in range(2)}  # mean 0.5
    r.accumulate(_on_policy(r, make_batch(2, 2, vocab=vocab, seed=17, rewards=rewards)))
    m = r.finish_step()
    assert m["node/L0N0/advantage_mean"] == pytest.approx(0.0)  # first step: b = batch mean
    assert r.ema == pytest.approx({n: 0.5 for n in NODES})
    ones = {sid: 1.0 for sid in rewards}
    r.accumulate(_on_policy(r, make_batch(2, 2, vocab=vocab, seed=18, rewards=ones, version=1)))
    m = r.finish_step()
    assert m["node/L0N0/advantage_mean"] == pytest.approx(0.5)  # 1 - 0.5
    assert r.ema["L0N0"] == pytest.approx(0.75)  # 0.5 * 0.5 + 0.5 * 1


def test_load_adapters_for_growth(make_rank, rank):
    src = rank.export()  # trained tensors from the shared rank
    r = make_rank(small_config())
    fresh = r.export()
    assert r.load_adapters({"L1N0": src.tensors["L0N0"]}) == ["L1N0"]
    out = r.export()
    for k, v in src.tensors["L0N0"].items():
        assert torch.equal(out.tensors["L1N0"][k], v)
    assert not _changed(fresh, out)["L0N0"] and not _changed(fresh, out)["L0N1"]
    assert all(float(v.abs().sum()) == 0 for k, v in out.tensors["L0N0"].items() if ".lora_B." in k)


def test_a_token_outside_the_learners_nucleus_is_trained_not_skipped(make_rank, vocab):
    """top_p < 1: random tokens lie far outside the tiny model's nucleus. The learner scores
    them over nucleus + the sampled token: finite, so the step is applied, not skipped."""
    import dataclasses

    cfg = small_config()
    r = make_rank(dataclasses.replace(cfg, sampling=dataclasses.replace(cfg.sampling, top_p=0.3)))
    before = r.export()
    r.accumulate(make_batch(2, 2, vocab=vocab, seed=21))
    m = r.finish_step()
    assert m["learner/skipped_steps"] == 0 and math.isfinite(m["learner/loss"])
    assert any(_changed(before, r.export()).values())


@pytest.mark.parametrize("baseline", ["batch_mean", "ema"])
def test_empty_responses_count_in_every_baseline(make_rank, vocab, baseline):
    """An empty response has no token to train, but its reward is one of the node's
    outcomes, as it is in a leave-one-out group: L0N0's baseline is the mean of all 4 rows."""
    r = make_rank(small_config(baseline=baseline))
    rewards = {"q0#0": 1.0, "q0#1": 0.0, "q1#0": 0.0, "q1#1": 0.0}
    batch = _on_policy(r, make_batch(2, 2, vocab=vocab, seed=23, rewards=rewards))
    rows = [dict(row, response_ids=[], logprobs=[]) if row["node"] == "L0N0" and row["sample_id"] == "q0#0" else row
            for row in batch.to_pylist()]
    from learner_helpers import to_batch

    r.accumulate(to_batch(rows))
    m = r.finish_step()
    assert m["node/L0N0/reward_mean"] == pytest.approx(0.25)
    assert m["node/L0N0/advantage_mean"] == pytest.approx(0.0, abs=1e-9)
    if baseline == "ema":
        assert r.ema["L0N0"] == pytest.approx(0.25)


def test_an_orphaned_extension_build_lock_is_cleared_and_a_fresh_one_kept(tmp_path, monkeypatch):
    """A rank killed while DeepSpeed builds its CPU op leaves torch's owner-less build lock;
    the next rank would wait on it for ever. An old lock goes, a recent one (a build under
    way) stays."""
    import os
    import time

    from neuromas_dist.learner.model import STALE_BUILD_LOCK_S, clear_stale_build_lock

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    lock.touch()
    assert not clear_stale_build_lock("deepspeed_shm_comm") and lock.exists()
    old = time.time() - STALE_BUILD_LOCK_S - 60
    os.utime(lock, (old, old))
    assert clear_stale_build_lock("deepspeed_shm_comm") and not lock.exists()
