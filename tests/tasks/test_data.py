"""Data loading: local JSONL/JSON/Parquet, the datasets "json" builder, DataConfig dispatch,
and one-line errors that name file and row."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import pytest

from neuromas_dist.tasks.base import Example
from neuromas_dist.tasks.data import DataError, TaskData, load_examples, load_hf_examples, load_task_data
from neuromas_dist.tasks.synthetic import make_synthetic

os.environ["HF_DATASETS_OFFLINE"] = "1"  # never reach for the hub from a test

GSM_ROWS = [
    {"question": "Natalia sold 48 clips in April and half as many in May. How many in total?",
     "answer": "In May she sold 48/2 = 24.\n48 + 24 = 72.\n#### 72"},
    {"question": "A shirt costs $1,234.50. What is its price?", "answer": "#### 1,234.50"},
    {"question": "What is 2 - 5?", "answer": -3},
]
FIELDS = dict(question_field="question", answer_field="answer", answer_type="number")


def write_jsonl(path, rows, blank_line_after: int | None = None):
    lines = [json.dumps(row) for row in rows]
    if blank_line_after is not None:
        lines.insert(blank_line_after, "")
    path.write_text("\n".join(lines) + "\n")
    return path


def data_cfg(**overrides):
    from neuromas_dist.config import DataConfig

    return dataclasses.replace(DataConfig(task="synthetic/arith", n_train=40, n_eval=10), **overrides)


def test_load_jsonl_normalises_gsm8k_gold(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", GSM_ROWS)
    examples = load_examples(path, id_prefix="gsm", **FIELDS)
    assert [e.answer for e in examples] == ["72", "1234.5", "-3"]
    assert [e.id for e in examples] == ["gsm-000000", "gsm-000001", "gsm-000002"]
    assert examples[0] == Example("gsm-000000", GSM_ROWS[0]["question"], "72")


def test_load_json_array_and_parquet_agree_with_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": r["question"], "answer": str(r["answer"])} for r in GSM_ROWS]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    expected = load_examples(write_jsonl(tmp_path / "a.jsonl", rows), id_prefix="x", **FIELDS)
    assert load_examples(tmp_path / "a.json", id_prefix="x", **FIELDS) == expected
    assert load_examples(str(tmp_path / "a.parquet"), id_prefix="x", **FIELDS) == expected


def test_choice_and_boxed_gold(tmp_path):
    rows = [{"q": "Pick one", "gold": "(c)"}, {"q": "Pick again", "gold": "A"}]
    path = write_jsonl(tmp_path / "mc.jsonl", rows)
    examples = load_examples(path, question_field="q", answer_field="gold", answer_type="choice", id_prefix="mc")
    assert [e.answer for e in examples] == ["C", "A"]
    path = write_jsonl(tmp_path / "math.jsonl", [{"q": "Half?", "gold": "It is \\boxed{\\frac{1}{2}}."}])
    examples = load_examples(path, question_field="q", answer_field="gold", answer_type="boxed", id_prefix="m")
    assert examples[0].answer == "\\frac{1}{2}"


@pytest.mark.parametrize("lines, message", [
    (['{"question": "q1", "answer": "1"}', '{"question": "q2"}'], "row 2: missing field 'answer'"),
    (['{"question": "q1", "answer": "1"}', '', '{"answer": "3"}'], "row 3: missing field 'question'"),
    (['{"question": "q1", "answer": "1"}', '{"question": "q2", "answer": '], "row 2: bad JSON"),
    (['{"question": "q1", "answer": "no digits here"}'], "row 1: cannot parse answer 'no digits here' as number"),
    (['{"question": "q1", "answer": null}'], "row 1: missing field 'answer'"),
    (['{"question": "", "answer": "1"}'], "row 1: field 'question' must be non-empty text"),
    (['{"question": "q", "answer": true}'], "row 1: field 'answer' must be text or a number"),
    (['[1, 2]'], "row 1: expected an object with fields, got int"),  # a JSON array file
    (['[{"question": "q",'], ": bad JSON at line 2"),  # cut off: the error is where it ends
    (['"just a string"'], "row 1: expected an object with fields, got str"),
    ([''], ": no examples"),
])
def test_malformed_rows_name_file_and_row(tmp_path, lines, message):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_examples(path, id_prefix="t", **FIELDS)
    text = str(info.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_missing_file_and_unsupported_suffix(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"data file not found: {tmp_path / 'nope.jsonl'}")):
        load_examples(tmp_path / "nope.jsonl", id_prefix="t", **FIELDS)
    (tmp_path / "data.csv").write_text("question,answer\n")
    with pytest.raises(DataError, match="unsupported file type '.csv'; use .jsonl, .json, .parquet"):
        load_examples(tmp_path / "data.csv", id_prefix="t", **FIELDS)
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="bad.parquet: not a readable Parquet file"):
        load_examples(tmp_path / "bad.parquet", id_prefix="t", **FIELDS)


def test_hf_loader_reads_local_json_through_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    path = write_jsonl(tmp_path / "gsm.jsonl", GSM_ROWS[:2])
    examples = load_hf_examples("json", "", "train", data_files=str(path), **FIELDS)
    assert [(e.id, e.answer) for e in examples] == [("json-train-000000", "72"), ("json-train-000001", "1234.5")]
    with pytest.raises(DataError, match=r"json\[train\]: no field 'solution'; fields: question, answer"):
        load_hf_examples("json", "", "train", data_files=str(path), question_field="question",
                         answer_field="solution", answer_type="number")
    with pytest.raises(DataError, match=r"cannot load json\[train\]"):
        load_hf_examples("json", "", "train", data_files=str(tmp_path / "missing.jsonl"), **FIELDS)


@pytest.mark.parametrize("kind", ["arith", "hier"])
def test_load_task_data_synthetic(kind):
    data = load_task_data(data_cfg(task=f"synthetic/{kind}", seed=2))
    assert isinstance(data, TaskData)
    assert data.task.name == f"synthetic/{kind}" and data.task.answer_type == "number"
    assert data.train == make_synthetic(kind, "train", 40, 2)
    assert data.eval == make_synthetic(kind, "eval", 10, 2)


def test_load_task_data_file_with_caps(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", GSM_ROWS)
    evals = write_jsonl(tmp_path / "eval.jsonl", GSM_ROWS[:2])
    data = load_task_data(data_cfg(task="file", train_path=str(train), eval_path=str(evals), n_train=2, n_eval=0))
    assert data.task.name == "file/train" and data.task.answer_format.startswith("End your reply")
    assert [e.answer for e in data.train] == ["72", "1234.5"]
    assert [e.id for e in data.eval] == ["eval-000000", "eval-000001"]


@pytest.mark.parametrize("overrides, message", [
    (dict(task="gsm8k"), "data.task='gsm8k': must be one of synthetic/arith, synthetic/hier, synthetic/op, file, hf"),
    (dict(task="synthetic/algebra"), "data.task='synthetic/algebra': must be one of"),
    (dict(task="file", eval_path="e.jsonl"), "data.task=file needs data.train_path"),
    (dict(task="hf"), "data.task=hf needs data.hf_name"),
    (dict(task="synthetic/arith", answer_type="choice"), "data.answer_type='choice' does not fit"),
])
def test_load_task_data_config_errors(overrides, message):
    from neuromas_dist.config import ConfigError

    with pytest.raises((DataError, ConfigError), match=re.escape(message)):  # the section refuses a bad task itself
        load_task_data(data_cfg(**overrides))
