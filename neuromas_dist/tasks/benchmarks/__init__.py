"""The NeuroMAS paper's benchmarks by name: ``data.task`` = ``arc_challenge``, ``bbh_navigate``,
``mmlu`` (with ``data.subject``) or ``humaneval``.

Each module holds one benchmark: the public Hugging Face data set it reads (real field
names, splits and quirks), how a row becomes a question, and the task that scores a reply.
Rows come through ``datasets`` either from the hub or, with ``data.local_dir``, from
``<split>.jsonl`` files of the same schema (tests, offline machines): one loader path.

Which split trains and which evaluates is each module's ``SOURCE``, and
``data.hf_train_split`` / ``data.hf_eval_split`` override it with ``datasets``' own syntax
(``test[:50%]``). Training and held-out questions are checked for overlap at load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, NamedTuple

from neuromas_dist.tasks.base import DataError, Example, Task, TaskData, cap, letter_lines, load_hf_dataset


class Source(NamedTuple):
    """Where a benchmark's rows live and which of them train and evaluate."""

    hf_name: str
    hf_config: str  # "" = none; "{subject}" = data.subject (MMLU)
    train_split: str
    eval_split: str
    note: str  # what trains and what evaluates, in one sentence (README, --help)


BENCHMARKS: dict[str, "Benchmark"] = {}


class Benchmark(NamedTuple):
    source: Source
    task: Callable[[Any], Task]  # DataConfig -> Task
    example: Callable[[dict, str], Example]  # (row, id prefix) -> Example; raises KeyError/ValueError on a bad row


def stable_id(prefix: str, text: str) -> str:
    """An id from the question's text: the same question has the same id in any slice."""
    return f"{prefix}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def lettered(question: str, choices: list[str]) -> str:
    """A question with its options as lettered lines, the form the choice extractor reads."""
    return question.strip() + "\n" + letter_lines(choices)


def load_rows(cfg: Any, source: Source, split: str) -> list[dict]:
    """``split``'s rows through ``datasets``: the hub set, or ``<split>.jsonl`` in data.local_dir."""
    name, config = cfg.hf_name or source.hf_name, (cfg.hf_config or source.hf_config).format(subject=cfg.subject)
    where = f"{cfg.local_dir or name}[{split}]"
    if not cfg.local_dir:
        return list(load_hf_dataset(where, config, name, config or None, split=split))
    base = split.split("[", 1)[0]
    path = Path(cfg.local_dir) / f"{base}.jsonl"
    if not path.is_file():
        raise DataError(f"{where}: no file {path} (data.local_dir holds <split>.jsonl files)")
    return list(load_hf_dataset(where, config, "json", data_files={base: str(path)}, split=split))


def _examples(bench: Benchmark, rows: list[dict], where: str, prefix: str) -> list[Example]:
    out = []
    for number, row in enumerate(rows, start=1):
        try:
            out.append(bench.example(row, prefix))
        except (KeyError, ValueError, TypeError, IndexError) as exc:
            raise DataError(f"{where} row {number}: {type(exc).__name__}: {exc}") from None
    if not out:
        raise DataError(f"{where}: no examples")
    return out


def load_benchmark(cfg: Any) -> TaskData:
    bench = BENCHMARKS[cfg.task]
    if cfg.task == "mmlu" and not cfg.subject:
        raise DataError("data.task=mmlu needs data.subject (e.g. abstract_algebra, college_physics)")
    s = bench.source
    splits = {"train": cfg.hf_train_split or s.train_split, "eval": cfg.hf_eval_split or s.eval_split}
    loaded = {part: _examples(bench, load_rows(cfg, s, split), f"{cfg.task}[{split}]", cfg.task)
              for part, split in splits.items()}
    overlap = {e.id for e in loaded["train"]} & {e.id for e in loaded["eval"]}
    if overlap:
        raise DataError(f"data.task={cfg.task}: {len(overlap)} held-out questions are also training questions "
                        f"(splits {splits['train']!r} and {splits['eval']!r}); evaluate on questions never trained on")
    return TaskData(bench.task(cfg), cap(loaded["train"], cfg.n_train), cap(loaded["eval"], cfg.n_eval))


def register(name: str, bench: Benchmark) -> Benchmark:
    BENCHMARKS[name] = bench
    return bench


# Each module registers itself on import; importing them here fills the table.
from neuromas_dist.tasks.benchmarks import arc, bbh, humaneval, mmlu  # noqa: E402, F401
