"""One placement group for the whole run: learner ranks first, then rollout workers.

Split mode gives every learner rank and every rollout worker its own bundle (on a GPU
cluster: their own GPUs). Colocated mode, for one-GPU boxes, puts rollout worker i in
learner rank i's bundle so both share its GPU (fractional ``num_gpus`` per actor).
"""

from __future__ import annotations

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from neuromas_dist.config import Config
from neuromas_dist.rollout.actors import NODE_RESOURCE_SHARE


def bundles(cfg: Config) -> list[dict[str, float]]:
    """Learner ranks' bundles, then rollout workers'. A ``*_node_resource`` in config adds a
    sliver of that custom resource, so a bundle can only land on a node that offers it."""
    r = cfg.resources

    def bundle(cpus: float, gpus: float, node_resource: str) -> dict[str, float]:
        return {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {}),
                **({node_resource: NODE_RESOURCE_SHARE} if node_resource else {})}

    if r.colocate:
        return [bundle(r.learner_cpus + r.rollout_cpus, r.learner_gpus + r.rollout_gpus, r.learner_node_resource)
                for _ in range(cfg.learner.num_ranks)]
    # Workers kept warm outlive the run, so they cannot sit in its group (removed at the end).
    rollout = 0 if cfg.rollout.keep_warm else cfg.rollout.num_workers
    return ([bundle(r.learner_cpus, r.learner_gpus, r.learner_node_resource)] * cfg.learner.num_ranks
            + [bundle(r.rollout_cpus, r.rollout_gpus, r.rollout_node_resource)] * rollout)


def rollout_bundle_index(cfg: Config, worker: int) -> int:
    if cfg.resources.colocate:
        return worker % cfg.learner.num_ranks
    return cfg.learner.num_ranks + worker


class Placement:
    """The run's placement group and the scheduling strategies cut from it."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.group = placement_group(bundles(cfg), strategy=cfg.resources.placement_strategy)
        ready, _ = ray.wait([self.group.ready()], timeout=300)
        if not ready:
            raise RuntimeError(f"Ray could not place {bundles(cfg)} within 300 s: "
                               f"the cluster lacks the CPUs/GPUs that resources.* ask for")

    def rollout_strategies(self) -> list[PlacementGroupSchedulingStrategy]:
        if self.cfg.rollout.keep_warm:
            return []  # placed by their own resources (actors.actor_options)
        return [PlacementGroupSchedulingStrategy(placement_group=self.group,
                                                 placement_group_bundle_index=rollout_bundle_index(self.cfg, i))
                for i in range(self.cfg.rollout.num_workers)]

    def remove(self) -> None:
        remove_placement_group(self.group)
