"""MMLU (cais/mmlu, one config per subject: abstract_algebra, college_physics,
professional_medicine, ... any of the 57): four options, the answer an index 0-3.

Rows: ``question``, ``subject``, ``choices`` (4 strings), ``answer`` (int). MMLU's training
data per subject is tiny (5 ``dev`` questions), and ``test`` is the split people report.
By default the subject's test split is cut in two by position: the first half trains, the
second half is held out (so numbers are not comparable with full-test MMLU scores). Use
``data.hf_train_split=auxiliary_train`` with ``data.hf_config=all`` for MMLU's own (off-subject)
training set, or any other split; the loader refuses a held-out set that overlaps training.
"""

from __future__ import annotations

from neuromas_dist.tasks.base import Example, make_task
from neuromas_dist.tasks.benchmarks import Benchmark, Source, lettered, register, stable_id

SOURCE = Source("cais/mmlu", "{subject}", "test[:50%]", "test[50%:]",
                "trains on the first half of the subject's test split, evaluates on the second half")


def example(row: dict, prefix: str) -> Example:
    choices, answer = list(row["choices"]), int(row["answer"])
    if not 0 <= answer < len(choices):
        raise ValueError(f"answer {answer} outside the {len(choices)} choices")
    question = lettered(row["question"], choices)
    return Example(stable_id(f"{prefix}-{row.get('subject') or 'mmlu'}", question), question, "ABCDEFGH"[answer])


BENCHMARK = register("mmlu", Benchmark(SOURCE, lambda cfg: make_task(f"mmlu/{cfg.subject}", "choice"), example))
