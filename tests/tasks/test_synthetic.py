"""Synthetic tasks: exact wording, correct answers, determinism, disjoint splits, scoring."""

from __future__ import annotations

import re

import pytest

from neuromas_dist.tasks.base import Example, Score, Task, make_task
from neuromas_dist.tasks.synthetic import (
    KINDS,
    SYNTHETIC_ANSWER_FORMAT,
    answer_sentence,
    make_synthetic,
    split_of,
    synthetic_corpus,
    synthetic_task,
)

ARITH_RE = re.compile(r"What is \((\d) \+ (\d)\) \* (\d) mod 10\?")
HIER_RE = re.compile(r"Let x = \((\d) \+ (\d)\) mod 10 and y = \((\d) \* (\d)\) mod 10\. What is \(x \+ y\) mod 10\?")


def test_arith_wording_and_answers():
    examples = make_synthetic("arith", "train", 300, seed=0)
    for example in examples:
        a, b, c = map(int, ARITH_RE.fullmatch(example.question).groups())
        assert example.answer == str(((a + b) * c) % 10)


def test_hier_wording_and_answers():
    for example in make_synthetic("hier", "eval", 300, seed=3):
        a, b, c, d = map(int, HIER_RE.fullmatch(example.question).groups())
        assert example.answer == str(((a + b) % 10 + (c * d) % 10) % 10)


def test_ids_and_types():
    examples = make_synthetic("arith", "train", 3, seed=0)
    assert [e.id for e in examples] == ["arith-train-000000", "arith-train-000001", "arith-train-000002"]
    assert all(isinstance(e, Example) for e in examples)
    assert make_synthetic("hier", "eval", 1, seed=0)[0].id == "hier-eval-000000"


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_per_seed(kind):
    assert make_synthetic(kind, "train", 50, seed=7) == make_synthetic(kind, "train", 50, seed=7)
    assert make_synthetic(kind, "train", 50, seed=7) != make_synthetic(kind, "train", 50, seed=8)
    # A longer draw extends a shorter one, so n_train changes do not reshuffle the start.
    assert make_synthetic(kind, "train", 80, seed=7)[:50] == make_synthetic(kind, "train", 50, seed=7)


@pytest.mark.parametrize("kind", KINDS)
def test_train_and_eval_disjoint_across_seeds(kind):
    train = {e.question for seed in range(3) for e in make_synthetic(kind, "train", 3000, seed)}
    evals = {e.question for seed in range(3) for e in make_synthetic(kind, "eval", 300, seed)}
    assert train and evals and not train & evals
    assert all(split_of(q) == "train" for q in train) and all(split_of(q) == "eval" for q in evals)


def test_arith_splits_partition_the_whole_space():
    # 1,000 distinct questions; drawing more than a split holds cycles it, so these cover it.
    train = {e.question for e in make_synthetic("arith", "train", 5000, seed=0)}
    evals = {e.question for e in make_synthetic("arith", "eval", 2000, seed=0)}
    assert len(train) + len(evals) == 1000
    assert 200 <= len(evals) <= 300  # the default 200 eval questions are all distinct


def test_questions_distinct_while_n_fits_the_split():
    examples = make_synthetic("arith", "eval", 200, seed=1)
    assert len({e.question for e in examples}) == 200


def test_answers_cover_all_digits():
    answers = {e.answer for e in make_synthetic("hier", "train", 500, seed=0)}
    assert answers == {str(d) for d in range(10)}


def test_zero_examples():
    assert make_synthetic("arith", "train", 0, seed=0) == []


@pytest.mark.parametrize("args, message", [
    (("algebra", "train", 1, 0), "unknown synthetic kind 'algebra'; known: arith, hier"),
    (("arith", "test", 1, 0), "unknown split 'test'; known: train, eval"),
    (("arith", "train", -1, 0), "n must be >= 0, got -1"),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_synthetic(*args)


def test_corpus_pairs_questions_with_answer_sentences():
    corpus = synthetic_corpus("arith", 4, seed=0)
    examples = make_synthetic("arith", "train", 4, seed=0)
    assert corpus[0::2] == [e.question for e in examples]
    assert corpus[1::2] == [f"The answer is {e.answer}." for e in examples]


def test_synthetic_task_scores_its_own_format():
    task = synthetic_task("hier")
    example = make_synthetic("hier", "train", 1, seed=0)[0]
    assert task == Task("synthetic/hier", "number", SYNTHETIC_ANSWER_FORMAT)
    assert "The answer is N." in task.answer_format
    assert task.score(answer_sentence(example.answer), example) == Score(1.0, example.answer)
    wrong = str((int(example.answer) + 1) % 10)
    assert task.score(answer_sentence(wrong), example) == Score(0.0, wrong)


@pytest.mark.parametrize("reply, reward, parsed", [
    ("The answer is 4.", 1.0, "4"),
    ("2 + 2 makes 4", 1.0, "4"),
    ("The answer is 4.0", 1.0, "4"),
    ("The answer is 5.", 0.0, "5"),
    ("", 0.0, None),
    ("I cannot tell.", 0.0, None),
    ("\\boxed{", 0.0, None),
])
def test_task_score_and_reward(reply, reward, parsed):
    task = make_task("t", "number")
    example = Example("t-0", "What is 2 + 2?", "4")
    assert task.score(reply, example) == Score(reward, parsed)
    assert task.reward(reply, example) == reward  # the bound method is the default RewardFn


@pytest.mark.parametrize("answer_type, reply, gold", [
    ("boxed", "so \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("choice", "The answer is (B).", "B"),
])
def test_other_answer_types_score(answer_type, reply, gold):
    task = make_task("t", answer_type)
    assert task.score(reply, Example("t-0", "q", gold)).reward == 1.0
    assert task.score("nothing", Example("t-0", "q", gold)).reward == 0.0


def test_task_rejects_unknown_answer_type():
    with pytest.raises(ValueError, match="unknown answer_type 'text'"):
        Task("t", "text", "say it")
