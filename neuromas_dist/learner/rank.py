"""One learner rank: frozen base + one named LoRA adapter per node, under DeepSpeed.

How a step runs (why it is built this way):

* Rows stream in with :meth:`LearnerRank.accumulate`. Each rank keeps the rows of the
  questions it owns (``trajectories.shards``), so a question's samples, and therefore every
  sample's rows, stay on one rank and leave-one-out baselines are local.
* Forward/backward starts on the first micro-batch, long before the last rollout
  arrives. Gradients go into the rank's own fp32 buffers (``sums.StepSums``) through
  ``torch.autograd.grad``, not into ``.grad``: ranks see different numbers of
  micro-batches of different nodes, and DeepSpeed's gradient reduction (allreduce in
  stage 0, bucketed reduce-scatter hooks in ZeRO-2) needs every rank to run the same
  backward graph the same number of times.
* :meth:`LearnerRank.finish_step` sums the step's statistics over ranks (one small
  all-reduce), fixes the advantages that needed the whole step's rewards
  (``baselines``), checks the logprob gap and finiteness, and then runs ONE
  ``engine.backward`` of the surrogate ``sum_p <p, g_p>`` over all adapters (identical
  graph on every rank; its gradient is exactly g_p) and ONE ``engine.step``: DeepSpeed
  averages, clips and applies, whatever the ZeRO stage. A skipped step never reaches
  DeepSpeed. tests/learner/test_update_equals_autograd.py checks that what DeepSpeed
  receives is the autograd gradient of the written-out loss over the step's rows.
* ``ppo_clip`` runs ``epochs x mini_batches`` such backward/step pairs instead, after the
  step's rows are scored and its baselines known (``step_grads``): every rank the same
  count, a rank without rows in a mini-batch joining with a zero gradient.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, Sequence

import ray
import torch

from neuromas_dist.adapters.peft_io import AdapterSet, peft_config_dict
from neuromas_dist.config import Config, agent_sampling
from neuromas_dist.learner import algos, baselines, checkpoint, forward, model, stats
from neuromas_dist.learner.rows import own_batch, rows_from_batch, rows_of
from neuromas_dist.learner.stats import LogprobGapError  # noqa: F401 - the learner's public error
from neuromas_dist.learner.step_grads import StepGradients
from neuromas_dist.learner.sums import VersionHistory
from neuromas_dist.trajectories.parquet import TrajectoryWriter


class LearnerRank:
    """One data-parallel rank. Run it as a Ray actor (LearnerGroup) or in-process (world size 1)."""

    def __init__(self, cfg: Config, model_dir: str, nodes: Sequence[str], rank: int = 0, world_size: int = 1,
                 init_adapters: AdapterSet | None = None, traj_dir: str | None = None):
        self.cfg, self.model_dir, self.nodes = cfg, str(model_dir), list(nodes)
        self.rank, self.world_size = rank, world_size
        # The rank writes the rows it trains: they are here already, nobody gathers them.
        self._writer = TrajectoryWriter(traj_dir, rank) if traj_dir else None
        self._init_adapters = init_adapters
        self.engine: Any = None  # the DeepSpeed engine (untyped), made by setup
        self.version = 0 if init_adapters is None else int(init_adapters.version)
        self.skipped_steps = 0
        self.ema: dict[str, float] = {}

    # ------------------------------------------------------------ setup

    def address(self) -> tuple[str, int]:
        """(ip, free port) of this rank's host: rank 0's becomes MASTER_ADDR/PORT."""
        ip = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        return ip, model.free_port()

    def setup(self, master_addr: str = "127.0.0.1", master_port: int | None = None) -> None:
        """Join the process group, build the PEFT model and wrap it with DeepSpeed."""
        model.join_process_group(self.rank, self.world_size, master_addr, master_port)
        init = self._init_adapters
        packed, attention = forward.resolve_packing(self.cfg.learner.padding_free)
        built = model.build(self.cfg, self.model_dir, self.nodes,
                            load_initial=None if init is None else lambda m: self._copy_in(init.tensors, m),
                            attn_implementation=attention)
        self.engine, self.optimizer, self.module = built.engine, built.optimizer, built.module
        self.spec = forward.ForwardSpec.of(self.cfg, self.module, packed)
        self.node_specs = self.spec.per_node(self.cfg, self.nodes)
        self.params, self._all_params, self.device = built.params, built.all_params, built.device
        self.passes = forward.NodePasses(self.module, self.node_specs, self._all_params, self.device)
        self.history = VersionHistory(self._all_params, self.cfg.trainer.max_staleness)
        self.history.remember(self.version)
        self._reset_step()

    # ------------------------------------------------------------ streaming

    def _reset_step(self) -> None:
        budgets = {n: agent_sampling(self.cfg, n)[2] for n in self.nodes}
        self.grads = StepGradients(self.cfg.learner, self.cfg.sampling.n_samples, budgets, self.params, self.version,
                                   self.ema, self.history, self.passes.logprobs, self.passes.base_logprobs,
                                   self.spec.packed, self.device)
        self._busy_s = 0.0

    def accumulate(self, batch: Any) -> int:
        """Take one trajectory batch (or ObjectRef resolved by Ray); returns rows kept by this rank."""
        t0 = time.perf_counter()
        own = own_batch(batch, self.rank, self.world_size)
        rows = rows_of(own)
        unknown = sorted({r.node for r in rows} - set(self.nodes))
        if unknown:
            raise ValueError(f"trajectory rows for nodes {unknown} this learner does not hold ({self.nodes})")
        if self._writer is not None and own.num_rows:
            self._writer.write(own.column("step")[0].as_py(), own)
        self.grads.add(rows)  # forward/backward of every full pass, now
        self._busy_s += time.perf_counter() - t0
        return len(rows)

    # ------------------------------------------------------------ the step

    def finish_step(self) -> dict[str, float]:
        """Flush, reduce, check, apply the step's update(s). Raises LogprobGapError on a large gap."""
        t0 = time.perf_counter()
        lc = self.cfg.learner
        done = False
        try:
            self.grads.flush()
            sums = self.grads.sums
            self.grads.stale.score(self.passes.logprobs, sums)
            totals, bad = stats.all_reduce(sums.stats, self.nodes, sums.bad, self.device, self.world_size)
            consts = baselines.step_constants(totals, lc.baseline, self.ema)
            stats.check_gap(totals, lc.max_logprob_gap, self.version)
            grad_norm, applied = float("nan"), not bad and stats.all_finite(totals, consts)
            if applied and self.grads.deferred:
                grad_norm, applied = self._ppo_updates(totals, consts)
            elif applied:
                grad_norm = self._apply(sums.gradient(consts), totals)
            if not applied:
                self.skipped_steps += 1
                if self.rank == 0:
                    print(f"[learner] step {self.version}: non-finite loss or gradient, update skipped "
                          f"({self.skipped_steps} skipped so far)", flush=True)
            elif lc.baseline == "ema":
                self.ema = algos.ema_update(self.ema, baselines.node_mean_rewards(totals), lc.ema_decay)
            self._busy_s += time.perf_counter() - t0
            busy = stats.all_reduce_max(self._busy_s, self.device, self.world_size)
            metrics = stats.step_metrics(totals, consts, self.ema if lc.baseline == "ema" else None, grad_norm,
                                         busy, self.skipped_steps, self.version)
            self.version += 1
            self.history.remember(self.version)
            done = True
            return metrics
        finally:
            if self._writer is not None:  # a failed step is not logged: its rows go too
                self._writer.close() if done else self._writer.discard()
            self._reset_step()

    def _ppo_updates(self, totals: dict[str, dict[str, float]], consts: Mapping[str, float]) -> tuple[float, bool]:
        """``epochs x mini_batches`` optimiser steps over the kept rows, the same count on
        every rank; each is normalised by its own mini-batch's global denominator. Returns
        (the mean gradient norm, whether all were applied): an update whose gradient is
        not finite is dropped with the rest; the ones applied before it stay."""
        lc, norms = self.cfg.learner, []
        for epoch in range(lc.epochs):
            for index in range(lc.mini_batches):
                sums = self.grads.update_sums(consts, epoch, index)
                update, bad = stats.all_reduce(sums.stats, self.nodes, sums.bad, self.device, self.world_size)
                if bad:
                    return float("nan"), False
                stats.add_updates(totals, update)
                norms.append(self._apply(sums.gradient(dict.fromkeys(self.nodes, 0.0)), update,
                                         denom_key="update_denom"))
        return sum(norms) / len(norms), True

    def _apply(self, gradient: Iterable[torch.Tensor], totals: stats.Totals, denom_key: str = "denom") -> float:
        """One DeepSpeed backward + step of the summed ``gradient`` over the global denominator."""
        denom = sum(s[denom_key] for s in totals.values())
        scale = self.world_size / max(denom, 1.0)  # DeepSpeed averages over ranks; we want the global sum / D
        surrogate = torch.zeros((), device=self.device)
        for p, g in zip(self._all_params, gradient):
            surrogate = surrogate + (p * (scale * g).to(p.dtype)).sum()
        self.engine.backward(surrogate)
        grads = [p.grad for p in self._all_params if p.grad is not None]
        # ZeRO moves gradients into partitions: then DeepSpeed reports the norm after its step
        squares = sum((g.float() ** 2).sum() for g in grads)  # 0 without grads
        norm = float(torch.sqrt(squares)) if isinstance(squares, torch.Tensor) else None
        self.engine.step()
        if norm is None:
            norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    # ------------------------------------------------------------ adapters

    def export(self) -> AdapterSet:
        """Every node's LoRA tensors (PEFT keys, CPU) at the current version."""
        return AdapterSet(self.version, model.node_tensors(self.module, self.nodes),
                          peft_config_dict(self.cfg.lora, self.model_dir))

    def load_adapters(self, adapters: AdapterSet | Mapping[str, Mapping[str, torch.Tensor]]) -> list[str]:
        """Copy in the given nodes' tensors (growth, resume); other nodes keep theirs. Returns nodes loaded."""
        tensors = adapters.tensors if isinstance(adapters, AdapterSet) else adapters
        self._copy_in(tensors)
        self.history.remember(self.version)  # the current version's weights changed
        return sorted(tensors)

    def _copy_in(self, tensors: Mapping[str, Mapping[str, torch.Tensor]],
                 into: torch.nn.Module | None = None) -> None:
        model.set_node_tensors(into if into is not None else self.module, self.nodes, tensors)
        # ZeRO (and bf16) keep fp32 master copies: refresh them or the next step undoes the load.
        if self.engine is not None and hasattr(self.engine.optimizer, "refresh_fp32_params"):
            self.engine.optimizer.refresh_fp32_params()

    @torch.no_grad()
    def score(self, batch: Any) -> list[list[float]]:
        """Learner logprobs of every row's response tokens (all rows, ignoring rank ownership)."""
        out: list[list[float]] = []
        for r in rows_from_batch(batch, 0, 1):
            if not r.response:
                out.append([])
                continue
            out.append(self.passes.logprobs([r]).lp[0, :len(r.response)].float().cpu().tolist())
        return out

    def set_version(self, version: int) -> None:
        """Renumber the current weights (between steps: the step in progress restarts)."""
        self.version = int(version)
        self.history.remember(self.version, forget_older=True)
        self._reset_step()

    # ------------------------------------------------------------ checkpoint state

    def get_state(self) -> dict[str, Any]:
        """This rank's optimizer and RNG state; rank 0 adds adapters and learner scalars."""
        state = checkpoint.rank_state(self.optimizer)
        if self.rank == 0:
            state["adapters"] = self.export()
            state["learner"] = {"version": self.version, "skipped_steps": self.skipped_steps,
                                "ema": dict(self.ema), "nodes": list(self.nodes),
                                "world_size": self.world_size, "zero_stage": self.cfg.learner.zero_stage}
        return state

    def set_state(self, adapters: AdapterSet, learner: Mapping[str, Any], rank_state: Mapping[str, Any]) -> None:
        self._copy_in(adapters.tensors)
        checkpoint.restore_rank_state(self.optimizer, rank_state)
        self.version = int(learner["version"])
        self.skipped_steps = int(learner["skipped_steps"])
        self.ema = {k: float(v) for k, v in learner["ema"].items()}
        self.history.remember(self.version, forget_older=True)
        self._reset_step()
