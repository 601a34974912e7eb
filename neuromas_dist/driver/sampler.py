"""Which training questions each step sees: a seeded shuffle per epoch and a cursor.

The cursor (epoch, position) is part of every checkpoint, so a resumed run draws exactly
the questions the uninterrupted run would have drawn next.
"""

from __future__ import annotations

import random
from typing import Any, Sequence, TypeVar

T = TypeVar("T")


class QuestionSampler:
    def __init__(self, items: Sequence[T], seed: int):
        if not items:
            raise ValueError("no training questions: the training split is empty")
        self._items = list(items)
        self._seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._shuffle(0)

    def _shuffle(self, epoch: int) -> list[int]:
        order = list(range(len(self._items)))
        random.Random(f"{self._seed}:{epoch}").shuffle(order)
        return order

    def next_batch(self, k: int) -> list[T]:
        out: list[T] = []
        while len(out) < k:
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffle(self.epoch)
            out.append(self._items[self._order[self.position]])
            self.position += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._shuffle(self.epoch)
