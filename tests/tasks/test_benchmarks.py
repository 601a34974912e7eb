"""The paper's benchmarks by name, loaded through ``datasets`` from fixture files written in
each data set's real schema (our own rows: tests/tasks/fixtures/<task>/<split>.jsonl), and
their scorers on hand-made replies."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from neuromas_dist.config import load_config
from neuromas_dist.rollout.rows import score_text_async
from neuromas_dist.tasks import DataError, load_task_data

FIXTURES = Path(__file__).parent / "fixtures"
SUBJECT = {"mmlu": ["data.subject=abstract_algebra"]}


def data(task: str, *overrides: str):
    cfg = load_config(None, [f"data.task={task}", f"data.local_dir={FIXTURES / task}", *SUBJECT.get(task, []),
                             *overrides])
    return load_task_data(cfg.data)


def test_arc_options_are_lettered_by_position_even_when_labelled_1_to_4():
    d = data("arc_challenge")
    assert (d.task.answer_type, len(d.train), len(d.eval)) == ("choice", 3, 2)  # train.jsonl / test.jsonl
    tool = next(e for e in d.train if "temperature" in e.question)
    assert tool.answer == "C" and "(C) thermometer" in tool.question  # answerKey "3" of labels 1-4
    light = next(e for e in d.eval if "light" in e.question)
    assert light.question.endswith("(E) a rock") and light.answer == "B"
    assert light.id == "arc_challenge-Own_2026_5"


def test_mmlu_needs_a_subject_and_halves_its_test_split_without_overlap():
    d = data("mmlu")
    assert d.task.name == "mmlu/abstract_algebra" and (len(d.train), len(d.eval)) == (2, 2)
    assert {e.id for e in d.train}.isdisjoint(e.id for e in d.eval)
    order = next(e for e in d.train + d.eval if "Z_6" in e.question)
    assert order.answer == "C" and "(D) 12" in order.question  # answer index 2
    with pytest.raises(DataError, match="needs data.subject"):
        load_task_data(load_config(None, ["data.task=mmlu", f"data.local_dir={FIXTURES / 'mmlu'}"]).data)


def test_a_held_out_set_that_overlaps_training_is_refused():
    with pytest.raises(DataError, match="2 held-out questions are also training questions"):
        data("bbh_navigate", "data.hf_train_split=test", "data.hf_eval_split=test[50%:]")


def test_navigate_and_humaneval_rows():
    nav = data("bbh_navigate")
    assert nav.task.answer_type == "yesno" and {e.answer for e in nav.train + nav.eval} == {"yes", "no"}
    he = data("humaneval")
    ex = he.train[0]
    assert ex.id == "humaneval-Own/0" and ex.meta["entry_point"] == "add" and "def check(candidate)" in ex.answer
    assert ex.question.startswith("Complete this Python function:\n```python\ndef add(")


def test_a_bad_row_is_one_line_naming_it(tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / "arc_challenge" / "test.jsonl").read_text().splitlines()]
    rows[1]["answerKey"] = "Z"
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "train.jsonl").write_text((FIXTURES / "arc_challenge" / "train.jsonl").read_text())
    with pytest.raises(DataError, match=r"arc_challenge\[test\] row 2: ValueError"):
        load_task_data(load_config(None, ["data.task=arc_challenge", f"data.local_dir={tmp_path}"]).data)
    with pytest.raises(DataError, match=r"humaneval\[test\[:50%\]\] row 1: KeyError: 'prompt'"):  # ARC rows
        load_task_data(load_config(None, ["data.task=humaneval", f"data.local_dir={tmp_path}"]).data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no file"):
        load_task_data(load_config(None, ["data.task=humaneval", f"data.local_dir={tmp_path / 'empty'}"]).data)


@pytest.mark.parametrize("reply,reward", [
    ("Plants breathe in carbon dioxide, so the answer is (B) as in photosynthesis.", 1.0),
    ("(B)", 1.0),
    ("Answer: b", 1.0),
    ("The answer is (A).", 0.0),
    ("I am not sure.", 0.0),
])
def test_choice_scorer_on_hand_made_replies(reply, reward):
    d = data("arc_challenge")
    plants = next(e for e in d.train if "plants" in e.question.lower())
    assert d.task.score(reply, plants).reward == reward


@pytest.mark.parametrize("reply,reward", [("Yes.", 1.0), ("no", 0.0), ("Step by step we end where we began. "
                                                                         "The answer is Yes.", 1.0),
                                          ("Maybe.", 0.0)])
def test_yesno_scorer_on_hand_made_replies(reply, reward):
    d = data("bbh_navigate")
    back = next(e for e in d.train + d.eval if e.answer == "yes")
    assert d.task.score(reply, back).reward == reward


CODE_REPLIES = {
    "a fenced function with an explanation after it": (
        "Here it is:\n```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```\nIt adds the two.",
        1.0, "passed"),
    "a bare continuation of the body": ("    return a + b\n", 1.0, "passed"),
    "an unclosed fence cut at max tokens": ("```python\ndef add(a, b):\n    return a + b\n", 1.0, "passed"),
    "a wrong function": ("```python\ndef add(a, b):\n    return a * b\n```", 0.0, "failed"),
    "prose without code": ("You should add the numbers.", 0.0, None),
}


@pytest.mark.parametrize("name", sorted(CODE_REPLIES))
def test_code_scorer_runs_the_tests_in_the_sandbox(name):
    reply, reward, parsed = CODE_REPLIES[name]
    d = data("humaneval")
    add = next(e for e in d.train if e.meta["entry_point"] == "add")
    score = d.task.score(reply, add)
    assert (score.reward, score.parsed) == (reward, parsed)


def test_the_workers_async_scoring_counts_sandbox_outcomes():
    d = data("humaneval")
    add = next(e for e in d.train if e.meta["entry_point"] == "add")
    scored = asyncio.run(score_text_async(d.task, "    while True:\n        pass\n    return a\n", add))
    assert scored.reward == 0.0 and scored.parsed == "timeout" and scored.flags["rollout/code_timeout"] == 1
