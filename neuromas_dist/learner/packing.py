"""Which rows share a forward pass, and the tensors that pass needs: rows padded to a
rectangle, or packed into one sequence with no padding at all.

Pure functions of the rows; no model here (``forward.py`` runs one).

* A pass is bounded by rows (``learner.micro_batch_size``) and by tokens
  (``learner.max_tokens_per_micro_batch``). Its cost in tokens is what the model computes:
  the sum of the rows' lengths when packed, rows x the longest row when padded.
* Ready rows go longest first, so a padded pass holds rows of similar length (little
  padding) and the short rows that arrive later still find company. A row over the budget
  runs alone: it cannot be split (its tokens attend to each other), and refusing it would
  drop a trained sample.
* Either layout is described by the same flat index of the response tokens: for response
  token j of row i, where the hidden state that predicts it sits (``at``), the token
  (``tok``), and where its log-probability goes in the ``[rows, longest response]``
  matrix the loss functions take (``row``, ``col``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch


class HasTokens(Protocol):
    prompt: list[int]
    response: list[int]


def row_tokens(row: HasTokens) -> int:
    return len(row.prompt) + len(row.response)


def pass_cost(lengths: Sequence[int], packed: bool) -> int:
    """Tokens a pass over rows of these lengths computes."""
    if not lengths:
        return 0
    return sum(lengths) if packed else len(lengths) * max(lengths)


def pass_ready(queue: Sequence[HasTokens], max_rows: int, max_tokens: int) -> bool:
    """Whether ``queue`` holds a full pass: ``max_rows`` rows, or ``max_tokens`` tokens
    (0 = no token budget)."""
    return len(queue) >= max_rows or (max_tokens > 0 and sum(map(row_tokens, queue)) >= max_tokens)


def take_pass(queue: Sequence[HasTokens], max_rows: int, max_tokens: int, packed: bool) -> tuple[list, list]:
    """(the next pass, the rows left): the longest rows first, as many as the row cap and
    the token budget allow, at least one."""
    order = sorted(queue, key=row_tokens, reverse=True)  # stable: equal lengths keep arrival order
    n = 1
    while n < min(len(order), max_rows):
        if max_tokens > 0 and pass_cost([row_tokens(r) for r in order[:n + 1]], packed) > max_tokens:
            break
        n += 1
    return order[:n], order[n:]


def pad_fraction(lengths: Sequence[int], passes: Sequence[Sequence[int]]) -> float:
    """Share of padded-pass tokens that are padding, for the given grouping of lengths."""
    computed = sum(pass_cost(p, packed=False) for p in passes)
    return 1.0 - sum(lengths) / computed if computed else 0.0


@dataclass
class Inputs:
    """One pass. ``ids`` is [B, L] (padded, with ``attn``) or [1, N] (packed, with
    ``position_ids`` restarting at 0 on each row and no attention mask: transformers then
    keeps attention inside each row). ``at`` indexes the [B, L] positions of the hidden
    states predicting the response tokens, flat over rows; ``row``/``col`` place each
    token's result in a [B, T] matrix (``shape``); ``spans`` is each row's extent along
    ``split_dim`` of the hidden states (rows when padded, tokens when packed), which is how
    a mixed pass routes each row through its own adapter."""

    ids: torch.Tensor
    attn: torch.Tensor | None
    position_ids: torch.Tensor | None
    at: tuple[torch.Tensor, torch.Tensor]
    tok: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    shape: tuple[int, int]
    spans: list[int]
    split_dim: int

    def mask(self) -> torch.Tensor:
        m = torch.zeros(self.shape, dtype=torch.bool)
        m[self.row, self.col] = True
        return m

    def to(self, device: torch.device | str) -> "Inputs":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Inputs(self.ids.to(device), move(self.attn), move(self.position_ids),
                      (self.at[0].to(device), self.at[1].to(device)), self.tok.to(device), self.row.to(device),
                      self.col.to(device), self.shape, self.spans, self.split_dim)


def build_inputs(rows: Sequence[HasTokens], packed: bool, pad: int = 0) -> Inputs:
    """The tensors of one pass over ``rows`` (each with at least one prompt token)."""
    seqs = [list(r.prompt) + list(r.response) for r in rows]
    lengths = [len(s) for s in seqs]
    # the hidden state at position p predicts token p + 1: response token j of a P-token
    # prompt is predicted at P - 1 + j (of its row; plus the row's offset when packed)
    starts = [0] * len(rows)
    if packed:
        for i in range(1, len(rows)):
            starts[i] = starts[i - 1] + lengths[i - 1]
    at_s: list[int]
    col: list[int]
    at_b, at_s, tok, row, col = [], [], [], [], []
    for i, r in enumerate(rows):
        n, first = len(r.response), starts[i] + len(r.prompt) - 1
        at_b += [0 if packed else i] * n
        at_s += range(first, first + n)
        tok += r.response
        row += [i] * n
        col += range(n)
    if packed:
        ids = torch.tensor([sum(seqs, [])], dtype=torch.long)
        position_ids = torch.tensor([[p for n in lengths for p in range(n)]], dtype=torch.long)
        attn = None
    else:
        ids = torch.full((len(rows), max(lengths)), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s)
            attn[i, :len(s)] = 1
        position_ids = None

    def long(xs: list[int]) -> torch.Tensor:
        return torch.tensor(xs, dtype=torch.long)

    width = max((len(r.response) for r in rows), default=0)
    return Inputs(ids, attn, position_ids, (long(at_b), long(at_s)), long(tok), long(row), long(col),
                  (len(rows), width), lengths if packed else [1] * len(rows), 1 if packed else 0)
