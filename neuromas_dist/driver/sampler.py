"""Which training questions each step sees: a seeded shuffle per epoch and a cursor.

The cursor (epoch, position) is part of every checkpoint, so a resumed run draws exactly
the questions the uninterrupted run would have drawn next.
"""

from __future__ import annotations

import random
from typing import Any, Generic, Sequence, TypeVar

T = TypeVar("T")


class QuestionSampler(Generic[T]):
    """Every epoch is a seeded permutation of the questions, drawn in order. A batch that
    crosses into the next epoch must not hold a question twice (the two copies would share
    request seeds, ``sample_id`` and leave-one-out group): a repeat is swapped with the next
    question of the new epoch that the batch does not hold. The swaps are part of the
    state, so a resumed run draws exactly what the uninterrupted one would have."""

    def __init__(self, items: Sequence[T], seed: int):
        if not items:
            raise ValueError("no training questions: the training split is empty")
        self._items = list(items)
        self._seed = seed
        self.epoch = 0
        self.position = 0
        self._swaps: list[tuple[int, int]] = []
        self._order = self._shuffle(0)

    def _shuffle(self, epoch: int) -> list[int]:
        order = list(range(len(self._items)))
        random.Random(f"{self._seed}:{epoch}").shuffle(order)
        return order

    def next_batch(self, k: int) -> list[T]:
        if k > len(self._items):
            raise ValueError(f"{k} questions per step but only {len(self._items)} training questions: "
                             f"a step would hold a question twice")
        out: list[T] = []
        held: set[int] = set()
        while len(out) < k:
            if self.position == len(self._order):
                self.epoch, self.position, self._swaps = self.epoch + 1, 0, []
                self._order = self._shuffle(self.epoch)
            j = self.position
            while self._order[j] in held:  # ends: fewer than k <= len(items) questions are held
                j += 1
            if j != self.position:
                self._swap(self.position, j)
            held.add(self._order[self.position])
            out.append(self._items[self._order[self.position]])
            self.position += 1
        return out

    def _swap(self, i: int, j: int) -> None:
        self._order[i], self._order[j] = self._order[j], self._order[i]
        self._swaps.append((i, j))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "swaps": [list(s) for s in self._swaps]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order, self._swaps = self._shuffle(self.epoch), []
        for i, j in state.get("swaps", []):
            self._swap(int(i), int(j))
