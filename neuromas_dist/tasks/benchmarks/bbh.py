"""BIG-Bench Hard, Navigate (lukaemon/bbh, config navigate): "If you follow these
instructions, do you return to the starting point?", answered Yes or No.

Rows: ``input`` (the instructions, ending in "Options:\\n- Yes\\n- No"), ``target`` ("Yes"/"No").
BBH has one split, ``test`` (250): by default its first half trains and its second half is
held out.
"""

from __future__ import annotations

from neuromas_dist.tasks.base import Example, make_task
from neuromas_dist.tasks.benchmarks import Benchmark, Source, register, stable_id

SOURCE = Source("lukaemon/bbh", "navigate", "test[:50%]", "test[50%:]",
                "trains on the first half of Navigate's only split (test, 250), evaluates on the second half")


def example(row: dict, prefix: str) -> Example:
    target = str(row["target"]).strip().lower()
    if target not in ("yes", "no"):
        raise ValueError(f"target {row['target']!r} is not Yes or No")
    return Example(stable_id(prefix, row["input"]), str(row["input"]).strip(), target)


BENCHMARK = register("bbh_navigate", Benchmark(SOURCE, lambda cfg: make_task("bbh_navigate", "yesno"), example))
