"""One step's running sums on one rank: gradients into the rank's own fp32 buffers, and
the per-node statistics the step's all-reduce adds up (see rank.py for why buffers)."""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, NamedTuple, Sequence

import torch

from neuromas_dist.learner import algos, stats
from neuromas_dist.learner.rows import Row, by_node, recorded_logprobs

if TYPE_CHECKING:
    from neuromas_dist.learner.forward import Scored


class PassTensors(NamedTuple):
    """One pass's per-token values, detached, [B, T] (``stale`` [B])."""
    lp: torch.Tensor  # the learner's logprobs (the step's starting policy's under ppo_clip)
    beh: torch.Tensor  # the rollout's
    mask: torch.Tensor
    stale: torch.Tensor  # the row was sampled by an older adapter version
    w: torch.Tensor  # the weights of algos.token_weights, 0 on padding
    corrected: torch.Tensor  # tokens a rollout-correction bound changed
    entropy: torch.Tensor
    kl: torch.Tensor | None  # the estimate of KL to the base model, when the loss holds it

    def select(self, i: torch.Tensor) -> "PassTensors":
        return PassTensors._make(None if x is None else x[i] for x in self)


class StepSums:
    """Every node's gradient of the terms with the advantages known so far (G_known) and,
    for nodes whose baseline waits for the step's end, of the same terms with advantage 1
    (G_one); the update is ``G_known - c_node * G_one`` (learner.baselines)."""

    def __init__(self, params: Mapping[str, Sequence[torch.nn.Parameter]], nodes: Sequence[str]):
        self.params, self.nodes = params, list(nodes)
        self._offset, start = {}, 0
        for node in self.nodes:
            self._offset[node], start = start, start + len(params[node])
        self.g_known = [torch.zeros_like(p, dtype=torch.float32) for n in self.nodes for p in params[n]]
        self.g_one: list[torch.Tensor] | None = None
        self.stats = stats.empty(self.nodes)
        self.bad = False  # a non-finite gradient on this rank

    def add_grads(self, nodes: Sequence[str], loss: torch.Tensor, unit: bool = False, retain: bool = False) -> None:
        """Add d loss / d (the nodes' parameters) to G_known (G_one with ``unit``)."""
        if unit and self.g_one is None:
            self.g_one = [torch.zeros_like(g) for g in self.g_known]
        into = self.g_one if unit else self.g_known
        assert into is not None  # g_one made above
        slots = [self._offset[n] + j for n in nodes for j in range(len(self.params[n]))]
        params = [p for n in nodes for p in self.params[n]]
        for slot, g in zip(slots, torch.autograd.grad(loss, params, retain_graph=retain, allow_unused=True)):
            if g is None:
                continue
            if not torch.isfinite(g).all():
                self.bad = True
            into[slot].add_(g.float())

    def gradient(self, consts: Mapping[str, float]) -> Iterator[torch.Tensor]:
        """``G_known - c_node * G_one`` per parameter, in node order."""
        for node in self.nodes:
            c, start = consts[node], self._offset[node]
            for i in range(start, start + len(self.params[node])):
                g = self.g_known[i]
                yield g - c * self.g_one[i] if c and self.g_one is not None else g

    def count_rewards(self, node: str, rows: Sequence[Row]) -> None:
        s = self.stats[node]
        s["rows"] += len(rows)
        s["reward_sum"] += sum(r.reward for r in rows)
        s["samples"] += sum(r.first for r in rows)
        s["sample_reward_sum"] += sum(r.reward for r in rows if r.first)
        s["adv_known_sum"] += sum(r.adv_known for r in rows)
        s["scale_sum"] += sum(r.scale for r in rows)

    def count(self, node: str, rows: Sequence[Row], t: PassTensors, terms: tuple[torch.Tensor, torch.Tensor],
              denom: float) -> None:
        """Statistics of one pass's rows of ``node``: rewards, tokens, the logprob gap of its
        on-policy tokens, the ratio learner / rollout and the weights taken from it, entropy,
        KL to the base, the loss terms (known, unit) and their denominator."""
        s = self.stats[node]
        m = t.mask.bool()
        gap, kl, on_tokens = algos.logprob_gap(t.lp, t.beh, m & ~t.stale.unsqueeze(-1))
        stale_mask = m & t.stale.unsqueeze(-1)
        ratio = torch.exp((t.lp - t.beh).clamp(max=60.0))[m]  # a metric: finite, or the step would be skipped
        self.count_rewards(node, rows)
        s["tokens"] += float(m.sum())
        s["input_tokens"] += sum(len(r.prompt) + len(r.response) for r in rows)
        s["onpolicy_tokens"] += on_tokens
        s["gap_sum"] += gap
        s["kl_sum"] += kl
        s["stale_tokens"] += float(stale_mask.sum())
        s["iw_sum"] += float((t.w * stale_mask).sum())
        s["ratio_sum"] += float(ratio.sum())
        s["ratio_max"] = max(s["ratio_max"], float(ratio.max())) if ratio.numel() else s["ratio_max"]
        s["corrected_tokens"] += float(t.corrected.sum())
        s["entropy_sum"] += float(t.entropy[m].sum())
        s["kl_base_sum"] += float(t.kl[m].sum()) if t.kl is not None else 0.0
        s["loss_known"] += float(terms[0].detach())
        s["loss_one"] += float(terms[1].detach())
        s["denom"] += denom

    def count_update(self, node: str, clipped: torch.Tensor, mask: torch.Tensor, loss: torch.Tensor,
                     denom: float) -> None:
        """One ppo_clip update pass's rows of ``node``: tokens whose clip bound, the loss."""
        s = self.stats[node]
        s["clipped_tokens"] += float(clipped.sum())
        s["update_tokens"] += float(mask.sum())
        s["update_loss"] += float(loss.detach())
        s["update_denom"] += denom

    def count_stale_check(self, node: str, lp: torch.Tensor, beh: torch.Tensor, mask: torch.Tensor) -> None:
        gap, _, tokens = algos.logprob_gap(lp, beh, mask)
        self.stats[node]["stale_gap_sum"] += gap
        self.stats[node]["stale_checked_tokens"] += tokens


class VersionHistory:
    """The adapters of the last few versions (small), so rows sampled by an older version
    can be re-scored under it: the logprob-gap guard stays armed in async mode."""

    def __init__(self, params: Sequence[torch.nn.Parameter], keep: int):
        self.params, self.keep = list(params), max(int(keep), 1)
        self._kept: dict[int, list[torch.Tensor]] = {}

    def remember(self, version: int, forget_older: bool = False) -> None:
        """Keep the current weights as ``version``; drop versions no row can still carry
        (more than ``keep`` behind), or all others with ``forget_older``."""
        if forget_older:
            self._kept.clear()
        self._kept[version] = [p.detach().clone() for p in self.params]
        for v in [v for v in self._kept if v < version - self.keep]:
            del self._kept[v]

    def __contains__(self, version: int) -> bool:
        return version in self._kept

    @contextmanager
    def swapped_in(self, version: int) -> Iterator[None]:
        """The weights of ``version`` in place of the current ones, restored after."""
        current = [p.detach().clone() for p in self.params]
        try:
            for p, old in zip(self.params, self._kept[version]):
                p.data.copy_(old)
            yield
        finally:
            for p, now in zip(self.params, current):
                p.data.copy_(now)


class StaleChecks:
    """Up to ``per_node`` stale rows per node and step, picked while streaming and
    re-scored at the step's end under the adapters of the version that sampled them: the
    gap is then as small as an on-policy row's unless the rollout served something else
    (a wrong or zero adapter)."""

    def __init__(self, per_node: int, history: VersionHistory):
        self.per_node, self.history = per_node, history
        self.rows: dict[str, list[Row]] = defaultdict(list)

    def pick(self, stale_rows: Sequence[Row]) -> None:
        for node, rows in by_node(stale_rows):
            room = self.per_node - len(self.rows[node])
            known = [r for r in rows if r.version in self.history]
            self.rows[node].extend(known[:max(room, 0)])

    @torch.no_grad()
    def score(self, logprobs: Callable[[Sequence[Row]], "Scored"], sums: StepSums) -> None:
        """``logprobs``: the rank's forward (rows -> learner logprobs, mask). Each version's
        weights are swapped in once for all nodes' rows of that version."""
        picked = [r for rows in self.rows.values() for r in rows if r.response]
        for version in sorted({r.version for r in picked}):
            with self.history.swapped_in(version):
                for node, subset in by_node([r for r in picked if r.version == version]):
                    lp, mask, _ = logprobs(subset)
                    sums.count_stale_check(node, lp, recorded_logprobs(subset, lp), mask)
