"""Answer extraction: normalisation, adversarial replies, and matching by type."""

from __future__ import annotations

import pytest

from neuromas_dist.tasks.answers import (
    answers_match,
    extract_boxed,
    extract_choice,
    extract_last_number,
    extract_number_answer,
    normalize_gold,
    normalize_number,
)

ADVERSARIAL = ["", " ", "\n\n", "no numbers here", "{{{", "}}}", "\\boxed{", "\\boxed{}", "(", ")", "-", ".",
               ",", "$", "%", "####", "answer is", "1" * 5000, "-" * 300 + "5", "\x00\uffff", "A" * 1000,
               " " * 5000 + "x", "answer is " * 500, "\\boxed{" * 200, "1,"]


@pytest.mark.parametrize("text, expected", [
    ("The answer is 72.", "72"),
    ("1,234", "1234"),
    ("It costs 1,234,567 in total", "1234567"),
    ("$12", "12"),
    ("12 dollars", "12"),
    ("12%", "12"),
    ("12kg", "12"),
    ("It is 12.", "12"),
    ("-3", "-3"),
    ("The temperature is -3 degrees", "-3"),
    ("x = (-3)", "-3"),
    ("3.50", "3.5"),
    ("4.0", "4"),
    ("0.000", "0"),
    ("-0", "0"),
    ("007", "7"),
    (".5 cups", "0.5"),
    ("1,234.50 dollars", "1234.5"),
    ("First 3, then 4, finally 5.", "5"),
    ("10-5", "5"),  # subtraction, not a negative five
    ("1,2,3", "3"),  # not a thousands group
    ("(3,4)", "4"),
    ("Step 1: 2 + 3 = 5\n#### 5", "5"),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72"),
    ("#### 1,000", "1000"),
    ("\u22127", "-7"),
    ("", None),
    ("only text", None),
    ("-", None),
    ("1.2.3", "1.2"),
])
def test_extract_last_number(text, expected):
    assert extract_last_number(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("The answer is 7.", "7"),
    ("The answer is 7. Check: 3 + 4 = 7, then 9", "7"),
    ("Answer: $1,234.50", "1234.5"),
    ("The answer is **-12**.", "-12"),
    ("THE ANSWER IS 3", "3"),
    ("the answer is 2. Actually the answer is 5.", "5"),
    ("#### 72", "72"),
    ("I get 3 + 4 = 7", "7"),  # no marker: the last number
    ("The answer is x + 1 = 8", "8"),  # no number right after the marker: the last number
    ("The answer is unknown.", None),
])
def test_extract_number_answer_prefers_marked_number(text, expected):
    assert extract_number_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("72", "72"),
    ("$1,234.50", "1234.5"),
    ("12 dollars", "12"),
    ("12 %", "12"),
    ("7.", "7"),
    ("- 5", "-5"),
    ("$-5", "-5"),
    ("  3.000  ", "3"),
    ("3 apples and 4", None),
    ("seven", None),
    ("", None),
    ("1 2", None),
])
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("\\boxed{42}", "42"),
    ("So \\boxed{ 3 } and finally \\boxed{5}.", "5"),
    ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
    ("\\boxed{\\sqrt{\\frac{a}{b}}}", "\\sqrt{\\frac{a}{b}}"),
    ("\\boxed {x^{2}}", "x^{2}"),
    ("\\fbox{B}", "B"),
    ("\\boxed{7} then cut off \\boxed{\\frac{1}{", "7"),  # last box unclosed: the committed one
    ("\\boxed{}", None),
    ("\\boxed{", None),
    ("boxed{3}", None),
    ("no box", None),
    ("", None),
])
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("The answer is (C).", "C"),
    ("The answer is C", "C"),
    ("Answer: B", "B"),
    ("**Answer:** (D)", "D"),
    ("The correct answer is option E.", "E"),
    ("answer is A. Wait, the answer is (B)", "B"),
    ("Between (A) and (B), I choose (D)", "D"),
    ("I pick C.", "C"),
    ("A", "A"),
    ("(e)", None),  # lower case never counts
    ("the answer is a number", None),
    ("The answer is Bob", None),
    ("ABCDE", None),
    ("The answer is (F).", None),
    ("I don't know.", None),
    ("", None),
])
def test_extract_choice(text, expected):
    assert extract_choice(text) == expected


@pytest.mark.parametrize("extract", [extract_last_number, extract_number_answer, extract_boxed, extract_choice,
                                     normalize_number])
@pytest.mark.parametrize("text", ADVERSARIAL)
def test_extractors_never_raise(extract, text):
    result = extract(text)
    assert result is None or isinstance(result, str)


@pytest.mark.parametrize("gold, answer_type, expected", [
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "number", "72"),
    ("1,000", "number", "1000"),
    ("The area is \\boxed{\\frac{1}{2}}.", "boxed", "\\frac{1}{2}"),
    ("  x  +  1 ", "boxed", "x + 1"),
    ("(c)", "choice", "C"),
    ("b", "choice", "B"),
    ("The answer is (D).", "choice", "D"),
    ("no number", "number", None),
    ("Z", "choice", None),
])
def test_normalize_gold(gold, answer_type, expected):
    assert normalize_gold(gold, answer_type) == expected


@pytest.mark.parametrize("pred, gold, answer_type, expected", [
    ("72", "72", "number", True),
    ("72.0", "72", "number", True),
    ("1234.5", "1,234.50", "number", True),
    ("0.3333334", "0.3333333", "number", True),  # within 1e-6
    ("0.333334", "0.333333", "number", True),  # exactly 1e-6 apart: still equal
    ("0.333335", "0.333333", "number", False),
    ("-3", "3", "number", False),
    ("7", "71", "number", False),
    ("1" * 40, "1" * 40, "number", True),  # beyond float precision: exact
    ("1" * 40, "1" * 39 + "2", "number", False),
    (None, "7", "number", False),
    ("abc", "7", "number", False),
    ("\\frac{1}{2}", "\\frac{1}{2}", "boxed", True),
    ("\\frac{1} {2}", "$\\frac{1}{2}$", "boxed", True),
    ("0.50", "0.5", "boxed", True),
    ("\\frac{1}{3}", "\\frac{1}{2}", "boxed", False),
    ("c", "C", "choice", True),
    ("B", "C", "choice", False),
    (None, "C", "choice", False),
])
def test_answers_match(pred, gold, answer_type, expected):
    assert answers_match(pred, gold, answer_type) is expected


def test_answers_match_unknown_type_names_known_types():
    with pytest.raises(ValueError, match="unknown answer_type 'words'; known: number, boxed, choice"):
        answers_match("1", "1", "words")
