"""World size 2 (two Ray actors, DeepSpeed over gloo) gives the same update as world size 1;
a batch a rank refuses is the step's error."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from learner_helpers import NODES, make_batch, small_config, with_logprobs
from neuromas_dist.learner.rows import owner_rank

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_world_size_2_matches_world_size_1(ray_local, make_rank, tiny_model_dir, vocab, zero_stage):
    from neuromas_dist.learner import LearnerGroup

    ray = ray_local
    cfg1 = small_config(baseline="batch_mean", micro_batch_size=3)
    cfg2 = dataclasses.replace(cfg1, learner=dataclasses.replace(cfg1.learner, num_ranks=2, zero_stage=zero_stage))
    single = make_rank(cfg1)
    init = single.export()
    batch = make_batch(6, 2, vocab=vocab, seed=31)
    batch = with_logprobs(batch, single.score(batch))
    assert {owner_rank(f"q{q}", 2) for q in range(6)} == {0, 1}  # both ranks get questions

    group = LearnerGroup(cfg2, tiny_model_dir, NODES, init_adapters=init)
    try:
        # streamed as two object-store refs, the way rollout workers hand them over
        for piece in (batch.slice(0, 17), batch.slice(17)):
            group.accumulate(ray.put(piece))
        m2 = group.finish_step()
        per_rank = ray.get([r.export.remote() for r in group.ranks])
        if zero_stage == 0:  # a batch a rank refuses fails the step, naming the column
            group.accumulate(batch.drop_columns(["reward"]))
            with pytest.raises(Exception, match="column 'reward' is missing"):
                group.finish_step()
    finally:
        group.shutdown()
    single.accumulate(batch)
    m1 = single.finish_step()

    assert m2["learner/loss"] == pytest.approx(m1["learner/loss"], rel=1e-5, abs=1e-7)
    assert m2["learner/grad_norm"] == pytest.approx(m1["learner/grad_norm"], rel=1e-4)
    assert m2["node/L1N0/advantage_mean"] == pytest.approx(m1["node/L1N0/advantage_mean"], abs=1e-6)
    want = single.export()
    assert per_rank[0].version == per_rank[1].version == want.version == 1
    for node in NODES:
        for k, v in want.tensors[node].items():
            # atol 1e-5 = 0.1% of one AdamW step at lr 1e-2: Adam divides by sqrt(v), so a
            # coordinate whose gradient is near zero turns the all-reduce's different
            # summation order into a visible (but harmless) difference.
            torch.testing.assert_close(per_rank[0].tensors[node][k], v, rtol=1e-4, atol=1e-5)
            assert torch.equal(per_rank[0].tensors[node][k], per_rank[1].tensors[node][k])
