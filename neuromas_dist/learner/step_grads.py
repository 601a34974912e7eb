"""One step's rows on one learner rank, from arrival to gradient.

Rows arrive as rollouts finish. Under the leave-one-out baseline a row waits until its
question's every sample of its node is here; then (or at once, for the other baselines)
it waits in a ready queue, per node or one mixed queue, until a pass is full
(``packing.pass_ready``), and that pass's forward/backward adds its terms to the step's
``StepSums``. Nothing here touches DeepSpeed: ``LearnerRank.finish_step`` reduces and applies.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Mapping, Sequence

import torch

from neuromas_dist.config import LearnerConfig
from neuromas_dist.learner import algos, baselines, packing
from neuromas_dist.learner.rows import Row, by_node, recorded_logprobs
from neuromas_dist.learner.sums import StaleChecks, StepSums, VersionHistory

Logprobs = Callable[[Sequence[Row]], "tuple[torch.Tensor, torch.Tensor]"]


class StepGradients:
    """The rank's step in progress at adapter ``version`` with EMA baselines ``ema`` (both
    fixed for the step). ``logprobs``: the rank's forward, rows -> (learner logprobs with
    graph [B, T], mask), each row under its own node's adapter."""

    def __init__(self, lc: LearnerConfig, n_samples: int, nodes: Sequence[str], params: Mapping[str, list],
                 version: int, ema: Mapping[str, float], history: VersionHistory, logprobs: Logprobs,
                 packed: bool, device: torch.device):
        self.lc, self.n_samples, self.nodes = lc, n_samples, list(nodes)
        self.version, self.ema, self.logprobs, self.packed, self.device = version, dict(ema), logprobs, packed, device
        self.sums = StepSums(params, self.nodes)
        self.stale = StaleChecks(lc.stale_check_rows, history)
        self._pending: dict[tuple[str, str], list[Row]] = defaultdict(list)  # loo: (question, node) incomplete
        self._ready: dict[str, list[Row]] = defaultdict(list)

    def add(self, rows: Sequence[Row]) -> None:
        """Queue the rows and run every pass that is full."""
        for row in rows:
            if self.lc.baseline == "loo":
                self._pending[(row.question_id, row.node)].append(row)
            else:
                row.adv_known = row.reward - baselines.known_baseline(self.lc.baseline, self.ema, row.node)
                self._ready[self._queue(row.node)].append(row)
        self._run_passes(force=False)

    def flush(self) -> None:
        """The step's end: run every queued row, incomplete groups and partial passes too."""
        self._run_passes(force=True)

    def _queue(self, node: str) -> str:
        """Ready rows wait per node, or all in one queue when micro-batches mix nodes."""
        return "" if self.lc.micro_batches == "mixed" else node

    def _run_passes(self, force: bool) -> None:
        for node, rows in baselines.pop_complete_groups(self._pending, self.n_samples, force):
            self._ready[self._queue(node)].extend(rows)
        lc = self.lc
        for key in dict.fromkeys(self._queue(n) for n in self.nodes):  # topology order
            while self._ready[key] and (force or packing.pass_ready(self._ready[key], lc.micro_batch_size,
                                                                     lc.max_tokens_per_micro_batch)):
                chunk, self._ready[key] = packing.take_pass(self._ready[key], lc.micro_batch_size,
                                                            lc.max_tokens_per_micro_batch, self.packed)
                self._micro_batch(chunk)

    def _micro_batch(self, rows: list[Row]) -> None:
        """Forward/backward of rows (of one node, or of several when micro-batches mix):
        their terms' gradients into G_known and G_one, their statistics per node."""
        # An empty response has no token to credit, but its reward is one of the node's
        # outcomes: it counts in batch-mean and EMA baselines as it does in leave-one-out.
        for node, empty in by_node([r for r in rows if not r.response]):
            self.sums.count_rewards(node, empty)
        rows = sorted((r for r in rows if r.response), key=lambda r: self.nodes.index(r.node))  # grouped by node
        if not rows:
            return
        lp, mask = self.logprobs(rows)
        lc, dev = self.lc, self.device
        beh = recorded_logprobs(rows, lp)
        stale = torch.tensor([r.version != self.version for r in rows], device=dev)
        self.stale.pick([r for r in rows if r.version != self.version])
        w = algos.importance_weights(lp, beh, stale, lc.importance_cap) * mask
        coef = algos.token_coefficients(mask, lc.loss_norm)
        adv = torch.tensor([r.adv_known for r in rows], device=dev)
        needs = {n: baselines.needs_step_constant(lc.baseline, self.ema, n) for n in {r.node for r in rows}}
        unit = torch.tensor([float(needs[r.node]) for r in rows], device=dev)
        nodes = [n for n in self.nodes if n in needs]
        self.sums.add_grads(nodes, algos.reinforce_terms(lp, adv, w, coef), retain=unit.any().item())
        if unit.any():
            self.sums.add_grads([n for n in nodes if needs[n]], algos.reinforce_terms(lp, unit, w, coef), unit=True)
        lp = lp.detach()
        for node in nodes:
            i = torch.tensor([j for j, r in enumerate(rows) if r.node == node], device=dev)
            terms = (algos.reinforce_terms(lp[i], adv[i], w[i], coef[i]),
                     algos.reinforce_terms(lp[i], torch.ones_like(adv[i]), w[i], coef[i]))
            self.sums.count(node, [rows[j] for j in i.tolist()], lp[i], beh[i], mask[i], stale[i], w[i], terms,
                            lc.loss_norm)
