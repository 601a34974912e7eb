"""Loading task data: synthetic generators, local JSONL/Parquet files, Hugging Face sets.

Every gold answer is normalised with the same extractor that later reads the model's
reply, so "1,234" in the data and "1234" in a reply compare equal, and a gold answer
that extractor cannot parse is caught at load time (naming file and row) instead of
silently scoring every reply 0.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from neuromas_dist.config import DataConfig
from neuromas_dist.tasks.answers import normalize_gold
from neuromas_dist.tasks.base import (
    DataError,
    Example,
    TaskData,
    cap,
    letter_lines,
    load_hf_dataset,
    make_task,
    resolve_reward_fn,
)
from neuromas_dist.tasks.benchmarks import BENCHMARKS, load_benchmark
from neuromas_dist.tasks.synthetic import KINDS, make_synthetic, split_size, synthetic_task

JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
TASKS = tuple(f"synthetic/{kind}" for kind in KINDS) + ("file", "hf", "arc_challenge", "bbh_navigate", "mmlu",
                                                        "humaneval")


class _Fields(NamedTuple):
    question: str
    answer: str
    answer_type: str
    template: str = ""  # data.prompt_template: the question built from the row's fields


class _RowFields(dict):
    """A row as ``str.format_map`` reads it: a list renders as lettered lines ("(A) ...");
    a missing field is a KeyError naming it."""

    def __missing__(self, key: str) -> Any:
        raise KeyError(key)

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, (list, tuple)):
            return letter_lines(value)
        return value


def _question(row: dict, where: str, fields: _Fields) -> str:
    if fields.template:
        try:
            question = fields.template.format_map(_RowFields(row))
        except KeyError as exc:
            raise DataError(f"{where}: data.prompt_template names field {exc.args[0]!r}, which the row lacks; "
                            f"fields: {', '.join(map(str, row))}") from None
        except (ValueError, IndexError) as exc:
            raise DataError(f"{where}: data.prompt_template: {exc}") from None
    else:
        if row.get(fields.question) is None:
            raise DataError(f"{where}: missing field {fields.question!r}")
        question = row[fields.question]
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: field {fields.question!r} must be non-empty text, got {_short(question)}")
    return question


def _short(value: Any, limit: int = 40) -> str:
    text = " ".join(str(value).split())
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _to_example(row: Any, where: str, fields: _Fields, example_id: str) -> Example:
    """One raw row -> Example; `where` is "<file> row <n>" for error messages."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with fields, got {type(row).__name__}")
    question = _question(row, where, fields)
    if row.get(fields.answer) is None:
        raise DataError(f"{where}: missing field {fields.answer!r}")
    # JSON may store a number gold as a number; bools would silently become "True".
    raw_answer = row[fields.answer]
    if isinstance(raw_answer, bool) or not isinstance(raw_answer, (str, int, float)):
        raise DataError(f"{where}: field {fields.answer!r} must be text or a number, got {_short(raw_answer)}")
    gold = normalize_gold(str(raw_answer), fields.answer_type)
    if gold is None:
        raise DataError(f"{where}: cannot parse answer {_short(raw_answer)} as {fields.answer_type}")
    return Example(example_id, question, gold)


def _json_rows(path: str) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed row) for JSON lines; a file holding one JSON array
    is accepted too, numbered by array position."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if text.lstrip().startswith("["):
        try:
            yield from enumerate(json.loads(text), start=1)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: bad JSON at line {exc.lineno}: {exc.msg}") from None
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} row {number}: bad JSON: {exc.msg}") from None


def _parquet_rows(path: str) -> Iterator[tuple[int, Any]]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(exc).split())})") from None
    yield from enumerate(table.to_pylist(), start=1)


def _rows(path: str) -> Iterator[tuple[int, Any]]:
    if not os.path.isfile(path):
        raise DataError(f"data file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in JSON_SUFFIXES:
        return _json_rows(path)
    if suffix in PARQUET_SUFFIXES:
        return _parquet_rows(path)
    raise DataError(f"{path}: unsupported file type {suffix!r}; use {', '.join(JSON_SUFFIXES + PARQUET_SUFFIXES)}")


def _examples(rows: Iterable[tuple[int, Any]], source: str, fields: _Fields, id_prefix: str) -> list[Example]:
    examples = [_to_example(row, f"{source} row {number}", fields, f"{id_prefix}-{index:06d}")
                for index, (number, row) in enumerate(rows)]
    if not examples:
        raise DataError(f"{source}: no examples")
    return examples


def load_examples(path: str | os.PathLike, *, question_field: str, answer_field: str,
                  answer_type: str, id_prefix: str, prompt_template: str = "") -> list[Example]:
    """Examples from a local .jsonl/.json (JSON lines) or .parquet file."""
    path = os.fspath(path)
    fields = _Fields(question_field, answer_field, answer_type, prompt_template)
    return _examples(_rows(path), path, fields, id_prefix)


def load_questions(path: str | os.PathLike, *, question_field: str, prompt_template: str = ""
                   ) -> list[tuple[dict, str]]:
    """(row, question text) of every row of a local file, for generation: no gold answer
    needed. The question comes from ``question_field`` or ``prompt_template`` as in training."""
    path = os.fspath(path)
    fields = _Fields(question_field, "", "text", prompt_template)
    out = []
    for number, row in _rows(path):
        if not isinstance(row, dict):
            raise DataError(f"{path} row {number}: expected an object with fields, got {type(row).__name__}")
        out.append((row, _question(row, f"{path} row {number}", fields)))
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def load_hf_examples(name: str, config: str, split: str, *, question_field: str, answer_field: str,
                     answer_type: str, data_files: str | list[str] | None = None,
                     id_prefix: str | None = None, prompt_template: str = "") -> list[Example]:
    """Examples from `datasets.load_dataset(name, config, split=split)`; name="json"
    with data_files reads local files through the same path."""
    source = f"{name}[{split}]"
    dataset = load_hf_dataset(source, config, name, config or None, split=split, data_files=data_files)
    for field in (answer_field,) if prompt_template else (question_field, answer_field):
        if field not in dataset.column_names:
            raise DataError(f"{source}: no field {field!r}; fields: {', '.join(dataset.column_names)}")
    fields = _Fields(question_field, answer_field, answer_type, prompt_template)
    prefix = id_prefix or f"{name.rsplit('/', 1)[-1]}-{split}"
    return _examples(enumerate(dataset, start=1), source, fields, prefix)


def _require(cfg: DataConfig, *names: str) -> None:
    for name in names:
        if not getattr(cfg, name):
            raise DataError(f"data.task={cfg.task} needs data.{name}")


def _synthetic_data(cfg: DataConfig, kind: str) -> TaskData:
    if cfg.answer_type != "number":
        raise DataError(f"data.task={cfg.task} has number answers; data.answer_type={cfg.answer_type!r} does not fit")
    train = make_synthetic(kind, "train", cfg.n_train, cfg.seed)
    # Held-out questions are distinct: a confidence interval over questions must not
    # count a repeated question twice, so n_eval is capped at the split's size.
    evals = make_synthetic(kind, "eval", min(cfg.n_eval, split_size(kind, "eval")), cfg.seed)
    return TaskData(synthetic_task(kind), train, evals)


def _file_data(cfg: DataConfig) -> TaskData:
    _require(cfg, "train_path", "eval_path")
    kw = dict(question_field=cfg.question_field, answer_field=cfg.answer_field, answer_type=cfg.answer_type,
              prompt_template=cfg.prompt_template)
    train = load_examples(cfg.train_path, id_prefix="train", **kw)
    evals = load_examples(cfg.eval_path, id_prefix="eval", **kw)
    name = f"file/{os.path.splitext(os.path.basename(cfg.train_path))[0]}"
    return TaskData(make_task(name, cfg.answer_type), cap(train, cfg.n_train), cap(evals, cfg.n_eval))


def _hf_data(cfg: DataConfig) -> TaskData:
    _require(cfg, "hf_name")
    kw = dict(question_field=cfg.question_field, answer_field=cfg.answer_field, answer_type=cfg.answer_type,
              prompt_template=cfg.prompt_template)
    train = load_hf_examples(cfg.hf_name, cfg.hf_config, cfg.hf_train_split or "train", **kw)
    evals = load_hf_examples(cfg.hf_name, cfg.hf_config, cfg.hf_eval_split or "test", **kw)
    return TaskData(make_task(f"hf/{cfg.hf_name}", cfg.answer_type), cap(train, cfg.n_train), cap(evals, cfg.n_eval))


def load_task_data(cfg: DataConfig) -> TaskData:
    """Task and train/eval examples for a DataConfig (read by attribute name)."""
    if cfg.task.startswith("synthetic/") and cfg.task.removeprefix("synthetic/") in KINDS:
        data = _synthetic_data(cfg, cfg.task.removeprefix("synthetic/"))
    elif cfg.task == "file":
        data = _file_data(cfg)
    elif cfg.task == "hf":
        data = _hf_data(cfg)
    elif cfg.task in BENCHMARKS:
        data = load_benchmark(cfg)
    else:
        raise DataError(f"unknown data.task {cfg.task!r}; allowed: {', '.join(TASKS)}")
    if cfg.reward_fn:  # resolved here, so a bad name fails before anything starts
        resolve_reward_fn(cfg.reward_fn)
        data = data._replace(task=dataclasses.replace(data.task, reward_fn=cfg.reward_fn))
    if not data.eval:
        raise DataError(f"data.task={cfg.task}: no held-out questions (data.n_eval={cfg.n_eval}); "
                        f"evaluation needs at least one")
    return data


def answer_type_of(cfg: DataConfig) -> str:
    """The answer type the task of ``cfg`` reads replies with, without loading its data."""
    if cfg.task in BENCHMARKS:
        return BENCHMARKS[cfg.task].task(cfg).answer_type
    return "number" if cfg.task.startswith("synthetic/") else cfg.answer_type
