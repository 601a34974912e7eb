import math

from neuromas_dist.driver.placement import bundles, rollout_bundle_index
from neuromas_dist.driver.step_metrics import rollout_metrics
from neuromas_dist.config import load_config
from neuromas_dist.trajectories.schema import TrajectoryRow, concat, to_record_batch


def _row(sample: str, node: str, reward: float, n_tokens: int, parsed, cut=False, version=3):
    return TrajectoryRow(step=1, sample_id=sample, question_id=sample.split("#")[0], sample_index=0, node=node,
                         layer=int(node[1]), node_index=int(node[3]), prompt_ids=[1, 2], response_ids=[5] * n_tokens,
                         logprobs=[-0.5] * n_tokens, finish_reason="length" if cut else "stop", prompt_truncated=False,
                         response_truncated=cut, adapter_version=version, answer_text="x", parsed_answer=parsed,
                         reward=reward, worker_id=0, latency_s=0.1)


def test_rollout_metrics_by_hand():
    rows = [_row("q1#0", "L0N0", 1.0, 4, "3"), _row("q1#0", "L1N0", 1.0, 6, "3"),
            _row("q2#0", "L0N0", 0.0, 2, None, cut=True, version=2), _row("q2#0", "L1N0", 0.0, 8, None)]
    m = rollout_metrics(concat([to_record_batch(rows)]), sink="L1N0")
    assert m["rollout/samples"] == 2
    assert m["rollout/reward_mean"] == 0.5
    assert m["rollout/unparsable_frac"] == 0.5
    assert m["rollout/response_tokens"] == 20
    assert m["rollout/cut_frac"] == 0.25
    assert m["rollout/adapter_version_min"] == 2
    assert m["node/L0N0/response_len_mean"] == 3.0 and m["node/L1N0/response_len_mean"] == 7.0
    assert not any(isinstance(v, float) and math.isnan(v) for v in m.values())


def test_placement_split_and_colocated():
    cfg = load_config(None, ["rollout.num_workers=2", "learner.num_ranks=2"])
    assert bundles(cfg) == [{"CPU": 1.0}] * 4
    assert [rollout_bundle_index(cfg, i) for i in range(2)] == [2, 3]
    gpu = load_config(None, ["resources.colocate=true", "resources.rollout_gpus=0.5", "resources.learner_gpus=0.5",
                             "learner.num_ranks=2", "rollout.num_workers=2"])
    assert bundles(gpu) == [{"CPU": 2.0, "GPU": 1.0}] * 2
    assert [rollout_bundle_index(gpu, i) for i in range(2)] == [0, 1]


def test_placement_by_node_resource():
    """Rollout bundles ask for the rollout nodes' custom resource, learner bundles for the
    learner nodes': a sliver each, so every bundle of a kind fits on one node."""
    from neuromas_dist.driver.placement import NODE_RESOURCE_SHARE

    cfg = load_config(None, ["rollout.num_workers=2", "resources.rollout_node_resource=rollout_node",
                             "resources.learner_node_resource=learner_node"])
    assert bundles(cfg) == [{"CPU": 1.0, "learner_node": NODE_RESOURCE_SHARE}] + \
        [{"CPU": 1.0, "rollout_node": NODE_RESOURCE_SHARE}] * 2
    import pytest

    from neuromas_dist.config import ConfigError

    with pytest.raises(ConfigError, match="colocate=true shares one bundle"):
        load_config(None, ["resources.colocate=true", "resources.rollout_node_resource=a"])
