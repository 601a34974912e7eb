"""Driver-side handle on the learner ranks (Ray actors in one placement group).

Usage from the driver::

    group = LearnerGroup(cfg, model_dir, nodes, traj_dir=d) # starts num_ranks actors
    adapters = group.adapters()                             # version 0, for the rollout
    for arrival in step_rollout.batches(): group.accumulate(arrival.pieces)
    metrics = group.finish_step()                           # one joint update
    adapters = group.adapters()                             # version + 1, broadcast it

Rollout workers split every batch by question owner (``trajectories.shards``); each rank
gets the ObjectRef of its own piece, so it starts forward/backward on the first batch,
never deserialises another rank's questions, and writes the rows it trains to the run's
``trajectories/``. The driver never reads the rows: it works from the batches' summaries.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from neuromas_dist.adapters.peft_io import AdapterSet
from neuromas_dist.config import Config
from neuromas_dist.learner import checkpoint as ckpt


class LearnerGroup:
    """``cfg.learner.num_ranks`` DeepSpeed ranks as Ray actors; results come from rank 0."""

    def __init__(self, cfg: Config, model_dir: str | os.PathLike, nodes: Sequence[str],
                 init_adapters: AdapterSet | None = None, placement_group: PlacementGroup | None = None,
                 traj_dir: str | os.PathLike | None = None):
        self.cfg, self.nodes = cfg, list(nodes)
        self.world_size = int(cfg.learner.num_ranks)
        self._owns_pg = placement_group is None
        self._pg = placement_group if placement_group is not None else self._make_placement_group()
        res = cfg.resources
        env = {"DS_ACCELERATOR": "cuda" if res.learner_gpus > 0 else "cpu"}  # model.on_cuda() reads it
        # Imported here, not at the top: the rank's module pulls in PEFT, transformers' model
        # classes and DeepSpeed (~5 s), which the driver process never runs.
        from neuromas_dist.learner.rank import LearnerRank

        actor_cls = ray.remote(LearnerRank)
        # Ray actor handles: Any, as ray's ActorHandle types every method call as Never
        # (mypy then skips the rest of the function as unreachable)
        self.ranks: list[Any] = []
        for r in range(self.world_size):
            strategy = PlacementGroupSchedulingStrategy(
                placement_group=self._pg, placement_group_bundle_index=r)
            self.ranks.append(actor_cls.options(
                num_cpus=res.learner_cpus, num_gpus=res.learner_gpus, scheduling_strategy=strategy,
                runtime_env={"env_vars": env}, name=None,
            ).remote(cfg, str(model_dir), self.nodes, r, self.world_size, init_adapters,
                     None if traj_dir is None else str(traj_dir)))
        self._accumulated: list[Any] = []  # this step's accumulate calls, checked in gather
        addr, port = ray.get(self.ranks[0].address.remote())
        ray.get([rank.setup.remote(addr, port) for rank in self.ranks])

    def _make_placement_group(self) -> PlacementGroup:
        res = self.cfg.resources
        bundle = {"CPU": res.learner_cpus}
        if res.learner_gpus > 0:
            bundle["GPU"] = res.learner_gpus
        pg = placement_group([dict(bundle) for _ in range(self.world_size)], strategy=res.placement_strategy)
        ray.get(pg.ready())
        return pg

    # ------------------------------------------------------------ training

    def accumulate(self, pieces: Sequence[Any]) -> None:
        """Hand one trajectory batch to the ranks without waiting for them: ``pieces`` holds,
        per rank, its questions' rows (``trajectories.shards.split_by_owner``) as an ObjectRef
        or a RecordBatch, or None when it has none. A rank's error (a batch that breaks the
        contract) surfaces in the step's :meth:`gather`."""
        if len(pieces) != self.world_size:
            raise ValueError(f"{len(pieces)} trajectory pieces for {self.world_size} learner ranks")
        for rank, piece in zip(self.ranks, pieces):
            if piece is not None:  # actor calls run in order, before finish_step
                self._accumulated.append(rank.accumulate.remote(piece))

    def finish_step(self) -> dict[str, float]:
        """Apply the step on all ranks; rank 0's metrics. Raises LogprobGapError on a large gap."""
        return self.gather(self.finish_step_async())

    def finish_step_async(self) -> list[Any]:
        """Like finish_step, but returns the ranks' ObjectRefs at once (rank 0's first), so
        the driver can launch the next rollout while the update runs (async mode)."""
        return [rank.finish_step.remote() for rank in self.ranks]

    def gather(self, refs: list[Any]) -> dict[str, float]:
        """Rank 0's result of ``finish_step_async``. Waits on every rank (and on the step's
        accumulate calls), failing as soon as any fails: a dead rank leaves the others
        blocked in a collective, so waiting on rank 0 first would wait for ever."""
        pending, self._accumulated = list(refs) + self._accumulated, []
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(ready[0])
            except RayTaskError as exc:
                # With gloo a survivor's collective fails the moment a peer dies, possibly
                # before the peer's death is reported: name the death, not its echo.
                for ref in pending:
                    try:
                        ray.get(ref, timeout=10)
                    except RayActorError as dead:
                        raise dead from exc
                    except Exception:  # noqa: BLE001 - only a death changes the verdict
                        pass
                raise
        return ray.get(refs[0])

    def set_version(self, version: int) -> None:
        """Renumber the current adapters (a learner rebuilt from a checkpoint whose version
        the rollout workers have already moved past)."""
        ray.get([rank.set_version.remote(version) for rank in self.ranks])

    # ------------------------------------------------------------ adapters

    def adapters(self) -> AdapterSet:
        """All node adapters at the current version (from rank 0; ranks are identical)."""
        return ray.get(self.ranks[0].export.remote())

    def score(self, batch: Any) -> list[list[float]]:
        """Learner logprobs of every row's response tokens (rank 0)."""
        return ray.get(self.ranks[0].score.remote(batch))

    # ------------------------------------------------------------ checkpoint

    def save_checkpoint(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        return ckpt.save_checkpoint(path, ray.get([rank.get_state.remote() for rank in self.ranks]), extra)

    def load_checkpoint(self, path: str | os.PathLike) -> dict[str, Any]:
        """Restore every rank; returns the ``extra`` dict saved with it (e.g. the data cursor)."""
        adapters, learner, ranks = ckpt.load_checkpoint(path)
        check_nodes(learner["nodes"], self.nodes)
        stage = self.cfg.learner.zero_stage
        ray.get([rank.set_state.remote(adapters, learner, ckpt.rank_state_for(ranks, r, self.world_size, stage))
                 for r, rank in enumerate(self.ranks)])
        return dict(learner.get("extra", {}))

    def shutdown(self) -> None:
        for rank in self.ranks:
            ray.kill(rank)
        self.ranks = []
        if self._owns_pg:
            remove_placement_group(self._pg)


def check_nodes(saved: Sequence[str], current: Sequence[str]) -> None:
    if list(saved) != list(current):
        raise ValueError(f"checkpoint holds nodes {list(saved)} but the learner has {list(current)}; "
                         f"a different topology starts from a run's adapters (trainer.grow_from)")
