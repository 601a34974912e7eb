"""What a node's text carries (neuromas_dist.tasks.node_text) and the synthetic-task
helpers it reads sub-results with, on hand-made texts."""

from __future__ import annotations

import pytest

from neuromas_dist.tasks.node_text import carries, carry_fractions, pattern, states, top_patterns
from neuromas_dist.tasks.synthetic import stated_values, subresult_sentence, subresults

Q = "Let x = (4 + 8) mod 10 and y = (8 * 7) mod 10. What is (x + y) mod 10?"  # x=2, y=6
GOLD = "8"
OP_Q = "What is (3 + 4) mod 10?"


def test_subresults_of_the_hier_question():
    """x = (4 + 8) mod 10 = 2 and y = (8 * 7) mod 10 = 56 mod 10 = 6."""
    parts = subresults(Q)
    assert set(parts) == {"x", "y"}
    assert parts["x"] == ("(4 + 8) mod 10", "2")
    assert parts["y"] == ("(8 * 7) mod 10", "6")
    assert subresults(OP_Q) == {}


def test_sentences_written_out():
    """The sub-result sentence restates the definition next to its value."""
    assert subresult_sentence("x", subresults(Q)["x"]) == "x = (4 + 8) mod 10 = 2."
    assert subresult_sentence("y", subresults(Q)["y"]) == "y = (8 * 7) mod 10 = 6."


@pytest.mark.parametrize("text, carried, stated", [
    # The full sentence carries x only.
    ("x = (4 + 8) mod 10 = 2.", {"x": True, "y": False, "answer": False},
     {"x": True, "y": False, "answer": False}),
    # A wrong value is stated but not carried.
    ("x = 3.", {"x": False, "y": False, "answer": False},
     {"x": True, "y": False, "answer": False}),
    ("y = (8 * 7) mod 10 = 6. The answer is 8.", {"x": False, "y": True, "answer": True},
     {"x": False, "y": True, "answer": True}),
    # Naming x without a value states nothing.
    ("x is hard", {"x": False, "y": False, "answer": False},
     {"x": False, "y": False, "answer": False}),
    # "box" ends in x but is not x: the name needs a word boundary on its left.
    ("box = 2.", {"x": False, "y": False, "answer": False},
     {"x": False, "y": False, "answer": False}),
    # 18 is not 8: the whole number must match.
    ("The answer is 18.", {"x": False, "y": False, "answer": False},
     {"x": False, "y": False, "answer": True}),
])
def test_carries_and_states(text, carried, stated):
    """carries() needs the right value; states() only needs some value."""
    assert carries(text, Q, GOLD) == carried
    assert states(text, Q) == stated


def test_stated_values_lists_each_statement():
    """Both forms ("x = 3." and "x = (..) mod 10 = 2.") are read, in order."""
    assert stated_values("x = 3. Then x = (4 + 8) mod 10 = 2.", "x") == ["3", "2"]
    assert stated_values("box = 2.", "x") == []
    assert stated_values("x = 12.", "x") == ["12"]


def test_question_without_subresults_only_has_answer():
    """An op question names no sub-results: only "answer" is checked."""
    assert carries("The answer is 7.", OP_Q, "7") == {"answer": True}
    assert carries("x = 7.", OP_Q, "7") == {"answer": False}
    assert states("x = 7.", OP_Q) == {"answer": False}


def test_empty_gold_never_carries():
    """Without a gold answer nothing can be carried."""
    assert carries("The answer is 8.", Q, "")["answer"] is False


def test_pattern_masks_every_digit():
    """Each digit becomes '#' (10 -> ##) and runs of whitespace collapse to one space."""
    assert pattern("x = (4 + 8) mod 10 = 2.") == "x = (# + #) mod ## = #."
    assert pattern("The  answer\nis 18.") == "The answer is ##."
    assert pattern("no digits") == "no digits"


def test_top_patterns_fractions():
    """Five texts, four shapes: "x = #." covers 2/5, the others 1/5 each."""
    texts = ["x = 2.", "x = 3.", "y = 4.", "The answer is 8.", "The answer is 12."]
    top = top_patterns(texts, k=2)
    assert top[0] == ("x = #.", 0.4)
    assert len(top) == 2 and top[1][1] == pytest.approx(0.2)
    full = top_patterns(texts)
    fractions = [f for _, f in full]
    assert fractions == sorted(fractions, reverse=True)
    assert sum(fractions) == pytest.approx(1.0)
    assert {p for p, _ in full} == {"x = #.", "y = #.", "The answer is #.", "The answer is ##."}
    assert sum(f for _, f in top) <= 1.0
    assert top_patterns([]) == []


def test_carry_fractions_by_hand():
    """Four rows on Q (gold 8):
    1 "x = (4 + 8) mod 10 = 2."  carries x
    2 "x = 3. The answer is 8."  states x (wrong), carries answer
    3 "y = 6. The answer is 5."  carries y, states answer (wrong)
    4 "no numbers here"          nothing
    so x: carries 1/4, states 2/4; y: 1/4, 1/4; answer: carries 1/4, states 2/4."""
    texts = ["x = (4 + 8) mod 10 = 2.", "x = 3. The answer is 8.", "y = 6. The answer is 5.",
             "no numbers here"]
    rows = [{"text": t, "question": Q, "gold_answer": GOLD} for t in texts]
    assert carry_fractions(rows) == {
        "answer": {"carries": 0.25, "states": 0.5},
        "x": {"carries": 0.25, "states": 0.5},
        "y": {"carries": 0.25, "states": 0.25},
    }
    assert carry_fractions([]) == {}


@pytest.mark.parametrize("answer_type,gold,text,carried,stated", [
    ("choice", "B", "Plants breathe CO2, so the answer is (B).", True, True),
    ("choice", "B", "Answer: b", True, True),
    ("choice", "B", "The answer is (C).", False, True),
    ("choice", "B", "Gases move through leaves.", False, False),
    ("yesno", "yes", "We end where we began. Yes.", True, True),
    ("yesno", "yes", "no", False, True),
    ("yesno", "yes", "Take three steps.", False, False),
    ("code", "def check(candidate): ...", "```python\ndef add(a, b):\n    return a + b\n```\nDone.", None, True),
    ("code", "def check(candidate): ...", "Add the two numbers.", None, False),
])
def test_what_a_text_carries_is_read_with_the_tasks_own_extractor(answer_type, gold, text, carried, stated):
    """On ARC/MMLU (choice), Navigate (yes/no) and HumanEval (code) texts, not the toy's
    'The answer is N': a code task's answer is judged by its tests only, so texts say what
    they state, not whether it is right."""
    got = carries(text, "a question", gold, answer_type)
    assert got.get("answer") == carried
    assert states(text, "a question", answer_type)["answer"] == stated
    rows = [{"text": text, "question": "a question", "gold_answer": gold}]
    fractions = carry_fractions(rows, answer_type)
    assert fractions["answer"]["states"] == float(stated)
