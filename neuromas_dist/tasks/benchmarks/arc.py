"""ARC-Challenge (allenai/ai2_arc, config ARC-Challenge): grade-school science, 3-5 options.

Rows: ``id``, ``question``, ``choices: {text: [...], label: [...]}``, ``answerKey``. Quirk: a
few questions label their options 1-4 instead of A-D (and answerKey "1"-"4"); options are
shown as (A)-(E) by position either way. Trains on ``train`` (1,119), evaluates on ``test``
(1,172), as the paper reports.
"""

from __future__ import annotations

from neuromas_dist.tasks.base import Example, make_task
from neuromas_dist.tasks.benchmarks import Benchmark, Source, lettered, register

SOURCE = Source("allenai/ai2_arc", "ARC-Challenge", "train", "test",
                "trains on ARC-Challenge train (1,119 questions), evaluates on test (1,172)")


def example(row: dict, prefix: str) -> Example:
    labels, texts = list(row["choices"]["label"]), list(row["choices"]["text"])
    if not texts or len(labels) != len(texts):
        raise ValueError(f"choices {row['choices']!r}: labels and texts differ")
    gold = "ABCDEFGH"[labels.index(str(row["answerKey"]).strip())]  # "3" -> C when labels are 1-4
    return Example(f"{prefix}-{row['id']}", lettered(row["question"], texts), gold)


BENCHMARK = register("arc_challenge", Benchmark(SOURCE, lambda cfg: make_task("arc_challenge", "choice"), example))
