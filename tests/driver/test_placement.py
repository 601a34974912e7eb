from neuromas_dist.config import load_config
from neuromas_dist.driver.placement import bundles, rollout_bundle_index


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


def test_workers_kept_warm_are_placed_by_their_own_resources():
    """rollout.keep_warm: the run's group (removed when it ends) holds only the learner ranks;
    each worker asks for its node's resource sliver itself. Colocation is refused in one line."""
    import pytest

    from neuromas_dist.config import ConfigError
    from neuromas_dist.driver.placement import NODE_RESOURCE_SHARE
    from neuromas_dist.rollout.actors import actor_options

    cfg = load_config(None, ["rollout.keep_warm=true", "rollout.num_workers=2", "learner.num_ranks=2",
                             "resources.rollout_node_resource=rollout_node"])
    assert bundles(cfg) == [{"CPU": 1.0}] * 2
    assert actor_options(cfg)["resources"] == {"rollout_node": NODE_RESOURCE_SHARE}
    assert "resources" not in actor_options(load_config(None, ["resources.rollout_node_resource=rollout_node"]))
    with pytest.raises(ConfigError, match=r"^rollout.keep_warm=true cannot go with resources.colocate=true"):
        load_config(None, ["rollout.keep_warm=true", "resources.colocate=true", "resources.rollout_gpus=0.5",
                           "resources.learner_gpus=0.5"])
