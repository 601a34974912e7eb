"""One step's rows on one learner rank, from arrival to gradient.

Rows arrive as rollouts finish. When a row's advantage needs its question's other
samples (the leave-one-out baseline, and ``advantage_norm=std`` with it) it waits until
its question's every sample of its node is here; then (or at once, otherwise) it waits in a
ready queue, per node or one mixed queue, until a pass is full (``packing.pass_ready``).

* ``reinforce``: that pass's forward/backward adds its terms to the step's ``StepSums``
  at once; the loss is linear in the advantages, so even a baseline known only at the
  step's end streams (``baselines``).
* ``ppo_clip``: the pass is scored without a graph instead (the logprobs every later ratio
  is taken against, the statistics, the gap check), and the rows are kept; at the step's
  end :meth:`StepGradients.update_sums` runs ``epochs x mini_batches`` updates over them.
  The clip is not linear in the advantage, so those wait for the step's baselines.

Nothing here touches DeepSpeed: ``LearnerRank.finish_step`` reduces and applies.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Callable, Mapping, Sequence

import torch

from neuromas_dist.config import LearnerConfig
from neuromas_dist.learner import algos, baselines, packing
from neuromas_dist.learner.forward import Scored
from neuromas_dist.learner.rows import Row, by_node, padded, recorded_logprobs, stored
from neuromas_dist.learner.sums import PassTensors, StaleChecks, StepSums, VersionHistory

Logprobs = Callable[[Sequence[Row]], Scored]
RefLogprobs = Callable[[Sequence[Row]], torch.Tensor]
Run = Callable[[list[Row]], None]


def mini_batch(rows: Sequence[Row], count: int, index: int, seed: int) -> list[Row]:
    """The ``index``-th of ``count`` mini-batches of a rank's rows: whole questions, dealt
    round-robin after a shuffle seeded by ``seed`` (the same on every rank, so a replay
    splits alike). A rank with fewer questions than mini-batches gets empty ones: it still
    joins every update, with a zero gradient."""
    questions = sorted({r.question_id for r in rows})
    random.Random(seed).shuffle(questions)
    mine = set(questions[index::count])
    return [r for r in rows if r.question_id in mine]


class StepGradients:
    """The rank's step in progress at adapter ``version`` with EMA baselines ``ema`` (both
    fixed for the step). ``logprobs``: the rank's forward, rows -> ``Scored`` (with graph),
    each row under its own node's adapter; ``ref_logprobs``: the same rows under the base
    model (no graph); ``budgets``: each node's max_new_tokens (Dr.GRPO's constant norm)."""

    def __init__(self, lc: LearnerConfig, n_samples: int, budgets: Mapping[str, int], params: Mapping[str, list],
                 version: int, ema: Mapping[str, float], history: VersionHistory, logprobs: Logprobs,
                 ref_logprobs: RefLogprobs, packed: bool, device: torch.device):
        self.lc, self.n_samples, self.budgets, self.nodes = lc, n_samples, dict(budgets), list(budgets)
        self.version, self.ema, self.packed, self.device = version, dict(ema), packed, device
        self.logprobs, self.ref_logprobs = logprobs, ref_logprobs
        self.params = params
        self.sums = StepSums(params, self.nodes)
        self.stale = StaleChecks(lc.stale_check_rows, history)
        self.kept: list[Row] = []  # ppo_clip: the step's scored rows, for the updates
        self._pending: dict[tuple[str, str], list[Row]] = defaultdict(list)  # (question, node) incomplete
        self._ready: dict[str, list[Row]] = defaultdict(list)

    @property
    def deferred(self) -> bool:
        return self.lc.objective == "ppo_clip"

    def add(self, rows: Sequence[Row]) -> None:
        """Queue the rows and run every pass that is full."""
        lc = self.lc
        for row in rows:
            if lc.baseline == "loo":  # advantage_norm=std needs it (config)
                self._pending[(row.question_id, row.node)].append(row)
            else:
                row.adv_known = row.reward - baselines.known_baseline(lc.baseline, self.ema, row.node)
                self._ready[self._queue(row.node)].append(row)
        self._run_passes(force=False)

    def flush(self) -> None:
        """The step's end: run every queued row, incomplete groups and partial passes too."""
        self._run_passes(force=True)

    def _queue(self, node: str) -> str:
        """Ready rows wait per node, or all in one queue when micro-batches mix nodes."""
        return "" if self.lc.micro_batches == "mixed" else node

    def _run_passes(self, force: bool) -> None:
        for node, rows in baselines.pop_complete_groups(self._pending, self.n_samples, force,
                                                        self.lc.advantage_norm):
            self._ready[self._queue(node)].extend(rows)
        self._drain(self._ready, force, self._micro_batch)

    def _drain(self, ready: dict[str, list[Row]], force: bool, run: Run) -> None:
        lc = self.lc
        for key in dict.fromkeys(self._queue(n) for n in self.nodes):  # topology order
            while ready[key] and (force or packing.pass_ready(ready[key], lc.micro_batch_size,
                                                              lc.max_tokens_per_micro_batch)):
                chunk, ready[key] = packing.take_pass(ready[key], lc.micro_batch_size,
                                                      lc.max_tokens_per_micro_batch, self.packed)
                run(chunk)

    # ------------------------------------------------------------ one pass

    def _tensors(self, rows: Sequence[Row], scored: Scored, lp: torch.Tensor, ref: torch.Tensor | None
                 ) -> PassTensors:
        """A pass's detached per-token values, the weights from ``lp`` (the learner's
        logprobs the ratio to the rollout's is taken from)."""
        lc, mask = self.lc, scored.mask
        beh = recorded_logprobs(rows, lp)
        stale = torch.tensor([r.version != self.version for r in rows], device=self.device)
        w, corrected = algos.token_weights(lp - beh, mask, stale, lc.importance_cap, lc.rollout_correction,
                                           lc.correction_cap, lc.icepop_low, lc.icepop_high)
        kl = algos.kl_estimate(scored.lp.detach(), ref, lc.kl_estimator) if ref is not None else None
        return PassTensors(lp, beh, mask, stale, w, corrected, scored.entropy.detach(), kl)

    def _regularisers(self, scored: Scored, coef: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        lc = self.lc
        kl = algos.kl_estimate(scored.lp, ref, lc.kl_estimator) if ref is not None else None
        return algos.regulariser_terms(coef, kl, lc.kl_coef, scored.entropy, lc.entropy_coef)

    def _ref(self, rows: Sequence[Row]) -> torch.Tensor | None:
        return self.ref_logprobs(rows) if self.lc.kl_coef > 0 else None

    def _micro_batch(self, rows: list[Row]) -> None:
        """One pass of rows (of one node, or of several when micro-batches mix): streamed
        into G_known and G_one (reinforce) or scored and kept (ppo_clip)."""
        # An empty response has no token to credit, but its reward is one of the node's
        # outcomes: it counts in batch-mean and EMA baselines as it does in leave-one-out.
        for node, empty in by_node([r for r in rows if not r.response]):
            self.sums.count_rewards(node, empty)
        rows = sorted((r for r in rows if r.response), key=lambda r: self.nodes.index(r.node))  # grouped by node
        if not rows:
            return
        self.stale.pick([r for r in rows if r.version != self.version])
        ref = self._ref(rows)  # first: the base model's pass must not follow the graph's (PEFT resets grads)
        if self.deferred:
            with torch.no_grad():
                scored = self.logprobs(rows)
            for j, r in enumerate(rows):
                r.old, r.ref = scored.lp[j, :len(r.response)], None if ref is None else ref[j, :len(r.response)]
            self.kept.extend(rows)
        else:
            scored = self.logprobs(rows)
        self._stream(rows, scored, ref)

    def _stream(self, rows: list[Row], scored: Scored, ref: torch.Tensor | None) -> None:
        """REINFORCE terms with the advantages known so far into G_known, with advantage
        ``scale`` into G_one for nodes whose baseline waits for the step's end (under
        ppo_clip ``scored`` has no graph: only the statistics are taken)."""
        lc, dev, lp = self.lc, self.device, scored.lp
        t = self._tensors(rows, scored, lp.detach(), ref)
        coef = algos.token_coefficients(t.mask, lc.loss_norm)
        adv = torch.tensor([r.adv_known for r in rows], device=dev)
        needs = {n: baselines.needs_step_constant(lc.baseline, self.ema, n) for n in {r.node for r in rows}}
        unit = torch.tensor([r.scale if needs[r.node] else 0.0 for r in rows], device=dev)
        nodes = [n for n in self.nodes if n in needs]
        if lp.requires_grad:
            known = algos.reinforce_terms(lp, adv, t.w, coef) + self._regularisers(scored, coef, ref)
            self.sums.add_grads(nodes, known, retain=bool(unit.any().item()))
            if unit.any():
                self.sums.add_grads([n for n in nodes if needs[n]], algos.reinforce_terms(lp, unit, t.w, coef),
                                    unit=True)
        lp, scale = lp.detach(), torch.tensor([r.scale for r in rows], device=dev)
        for node in nodes:
            i = torch.tensor([j for j, r in enumerate(rows) if r.node == node], device=dev)
            n = t.select(i)
            reg = algos.regulariser_terms(coef[i], n.kl, lc.kl_coef, n.entropy, lc.entropy_coef)
            terms = (algos.reinforce_terms(lp[i], adv[i], n.w, coef[i]) + reg,
                     algos.reinforce_terms(lp[i], scale[i], n.w, coef[i]))
            self.sums.count(node, [rows[j] for j in i.tolist()], n, terms,
                            algos.loss_denominator(n.mask, lc.loss_norm, self.budgets[node]))

    # ------------------------------------------------------------ ppo_clip updates

    def update_sums(self, consts: Mapping[str, float], epoch: int, index: int) -> StepSums:
        """The gradient sums of update ``index`` of ``epoch``: PPO's clipped terms over that
        mini-batch of the kept rows, advantages final (``consts``: the step's baselines)."""
        rows = mini_batch(self.kept, self.lc.mini_batches, index, seed=self.version * 1_000_003 + epoch)
        sums = StepSums(self.params, self.nodes)
        ready: dict[str, list[Row]] = defaultdict(list)
        for r in rows:
            ready[self._queue(r.node)].append(r)
        self._drain(ready, True, lambda chunk: self._update_pass(chunk, consts, sums))
        return sums

    def _update_pass(self, rows: list[Row], consts: Mapping[str, float], sums: StepSums) -> None:
        lc, dev = self.lc, self.device
        rows = sorted(rows, key=lambda r: self.nodes.index(r.node))
        scored = self.logprobs(rows)
        old = padded(stored([r.old for r in rows], "old"), scored.lp)
        ref = padded(stored([r.ref for r in rows], "ref"), scored.lp) if lc.kl_coef > 0 else None
        beh = recorded_logprobs(rows, old)
        stale = torch.tensor([r.version != self.version for r in rows], device=dev)
        # the engines' mismatch and staleness: from the starting policy, the same in every update
        w, _ = algos.token_weights(old - beh, scored.mask, stale, lc.importance_cap, lc.rollout_correction,
                                   lc.correction_cap, lc.icepop_low, lc.icepop_high)
        coef = algos.token_coefficients(scored.mask, lc.loss_norm)
        adv = torch.tensor([r.adv_known - consts[r.node] * r.scale for r in rows], device=dev)
        loss = (algos.ppo_clip_terms(scored.lp, old, adv, w, coef, lc.clip_low, lc.clip_high)
                + self._regularisers(scored, coef, ref))
        nodes = [n for n in self.nodes if any(r.node == n for r in rows)]
        sums.add_grads(nodes, loss)
        clipped = algos.clipped(scored.lp, old, adv, scored.mask, lc.clip_low, lc.clip_high)
        for node in nodes:
            i = torch.tensor([j for j, r in enumerate(rows) if r.node == node], device=dev)
            part = algos.ppo_clip_terms(scored.lp[i].detach(), old[i], adv[i], w[i], coef[i], lc.clip_low,
                                        lc.clip_high)
            sums.count_update(node, clipped[i], scored.mask[i], part,
                              algos.loss_denominator(scored.mask[i], lc.loss_norm, self.budgets[node]))
