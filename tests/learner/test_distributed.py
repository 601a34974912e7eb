"""World size 2 (two Ray actors, DeepSpeed over gloo) gives the same update as world size 1;
each rank writes the rows it trained; a batch a rank refuses is the step's error. Both sides
are CPU Ray actors on any machine (``resources.learner_gpus=0``), so the comparison is of
world sizes, not of devices."""

from __future__ import annotations

import contextlib
import dataclasses

import pyarrow.parquet as pq
import pytest
import torch
from learner_helpers import NODES, make_batch, small_config, with_logprobs

from neuromas_dist.trajectories.parquet import read_step, step_files
from neuromas_dist.trajectories.shards import owner_rank, split_by_owner

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_world_size_2_matches_world_size_1(ray_local, tiny_model_dir, vocab, zero_stage, tmp_path):
    from neuromas_dist.learner import LearnerGroup

    ray = ray_local
    cfg1 = small_config(baseline="batch_mean", micro_batch_size=3)
    cfg2 = dataclasses.replace(cfg1, learner=dataclasses.replace(cfg1.learner, num_ranks=2, zero_stage=zero_stage))
    with contextlib.ExitStack() as stack:
        single = LearnerGroup(cfg1, tiny_model_dir, NODES)
        stack.callback(single.shutdown)
        init = single.adapters()
        batch = make_batch(6, 2, vocab=vocab, seed=31)
        batch = with_logprobs(batch, single.score(batch))
        assert {owner_rank(f"q{q}", 2) for q in range(6)} == {0, 1}  # both ranks get questions

        group = LearnerGroup(cfg2, tiny_model_dir, NODES, init_adapters=init, traj_dir=tmp_path)
        stack.callback(group.shutdown)
        # streamed in two batches, each as one object-store ref per rank, the way rollout workers hand them over
        for part in (batch.slice(0, 17), batch.slice(17)):
            group.accumulate([ray.put(piece) for piece in split_by_owner(part, 2)])
        m2 = group.finish_step()
        per_rank = ray.get([r.export.remote() for r in group.ranks])
        if zero_stage == 0:  # a batch a rank refuses fails the step, naming the column
            group.accumulate(split_by_owner(batch.drop_columns(["reward"]), 2))
            with pytest.raises(Exception, match="column 'reward' is missing"):
                group.finish_step()
        single.accumulate([batch])
        m1 = single.finish_step()
        want = single.adapters()

    step = batch.column("step")[0].as_py()
    assert [p.name for p in step_files(tmp_path)] == [f"step_{step:06d}_r0.parquet", f"step_{step:06d}_r1.parquet"]
    for rank, path in enumerate(step_files(tmp_path)):
        assert {owner_rank(q, 2) for q in pq.read_table(path).column("question_id").to_pylist()} == {rank}
    assert sorted(read_step(tmp_path, step).column("sample_id").to_pylist()) == \
        sorted(batch.column("sample_id").to_pylist()), "every row written once, by the rank that trained it"

    assert m2["learner/loss"] == pytest.approx(m1["learner/loss"], rel=1e-5, abs=1e-7)
    assert m2["learner/grad_norm"] == pytest.approx(m1["learner/grad_norm"], rel=1e-4)
    assert m2["node/L1N0/advantage_mean"] == pytest.approx(m1["node/L1N0/advantage_mean"], abs=1e-6)
    assert per_rank[0].version == per_rank[1].version == want.version == 1
    for node in NODES:
        for k, v in want.tensors[node].items():
            # atol 1e-5 = 0.1% of one AdamW step at lr 1e-2: Adam divides by sqrt(v), so a
            # coordinate whose gradient is near zero turns the all-reduce's different
            # summation order into a visible (but harmless) difference.
            torch.testing.assert_close(per_rank[0].tensors[node][k], v, rtol=1e-4, atol=1e-5)
            assert torch.equal(per_rank[0].tensors[node][k], per_rank[1].tensors[node][k])
