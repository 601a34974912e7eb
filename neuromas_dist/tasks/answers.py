"""Answer extraction and comparison: pure functions from model text to a normalised answer.

Every extractor returns a normalised string or None ("no parsable answer") and never
raises on any input string: a malformed reply is a wrong answer with reward 0, never a
crashed rollout. Gold answers go through the same functions, so a gold "1,234.50" and
a reply "1234.5 dollars" normalise to the same "1234.5".
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

ANSWER_TYPES = ("number", "boxed", "choice", "yesno", "code")
NUMBER_TOLERANCE = Decimal("1e-6")
CHOICE_LETTERS = "ABCDE"

# A minus sign counts only where it cannot be a subtraction ("10-5" is 10 and 5, not -5).
# Thousands commas only in well-formed groups, so "1,2,3" is three numbers, not 123.
# A dot is a decimal point only when digits follow: "It is 12." ends with 12.
_NUMBER = r"(?:(?<![\w)\]])[-\u2212])?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?<!\d)\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\d.])(?:{_NUMBER})")
# Surroundings a number may carry and still be "just a number": currency before, a
# percent sign or a unit word after, and sentence punctuation.
_BARE_NUMBER_RE = re.compile(
    rf"\s*(?:[-\u2212]\s*)?(?:[$€£¥]\s*)?(?P<num>{_NUMBER})(?:\s*(?:%|[A-Za-z]+))?\s*[.!]?\s*"
)
# The sink is told to end with "The answer is N."; the number right after that marker
# (or after GSM8K's "####") wins over stray numbers a reply may add afterwards.
_MARKED_NUMBER_RE = re.compile(rf"(?:(?i:answer\s*(?:is|:|=))|####)[\s:*]*(?:[$€£¥]\s*)?(?P<num>{_NUMBER})")
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_CHOICE_AFTER_ANSWER_RE = re.compile(
    r"(?i:answer)(?:\s+(?i:is))?[\s:*]*(?:(?i:option)\s+)?\(?([A-E])\)?(?![A-Za-z0-9])"
)
# After an explicit "Answer:", a lower-case letter counts when nothing word-like follows it
# ("Answer: b", "answer is (c)."), never in prose ("the answer is a prime").
_CHOICE_LOWER_AFTER_ANSWER_RE = re.compile(
    r"(?i:answer)(?:\s+(?i:is))?[\s:*]*\(?([a-e])\)?(?=[\s.!*]*$|\)|[.!*]\s)"
)
_CHOICE_PAREN_AT_END_RE = re.compile(r"\(([A-E])\)[\s.!*]*$")
_CHOICE_LETTER_AT_END_RE = re.compile(r"(?<![A-Za-z0-9])([A-E])[).:]?[\s.!*]*$")


def _canonical(token: str) -> str | None:
    """'1,234.50' -> '1234.5', '-0' -> '0', '4.0' -> '4', '.5' -> '0.5'."""
    cleaned = token.replace(",", "").replace("\u2212", "-")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def normalize_number(s: str) -> str | None:
    """Canonical form of a string that is one number, give or take currency, units and
    punctuation ("$1,234.50" -> "1234.5", "12%" -> "12", "7." -> "7"); None otherwise."""
    match = _BARE_NUMBER_RE.fullmatch(s)
    if match is None:
        return None
    sign = "-" if s.lstrip().startswith(("-", "\u2212")) and not match["num"].startswith(("-", "\u2212")) else ""
    return _canonical(sign + match["num"])


def extract_last_number(text: str) -> str | None:
    """The last number in the text, normalised; None when there is none."""
    matches = _NUMBER_RE.findall(text)
    return _canonical(matches[-1]) if matches else None


def extract_number_answer(text: str) -> str | None:
    """The number after the last "answer is" / "Answer:" / "####", else the last number."""
    marked = list(_MARKED_NUMBER_RE.finditer(text))
    if marked:
        return _canonical(marked[-1]["num"])
    return extract_last_number(text)


def _braced_content(text: str, start: int) -> str | None:
    """Text from `start` up to the brace closing the one just before it; None if unclosed."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def extract_boxed(text: str) -> str | None:
    """Contents of the last complete \\boxed{...} (nested braces kept), stripped.

    A reply cut off inside its last box falls back to the box before it, which is the
    answer the model had committed to. An empty box is no answer.
    """
    for match in reversed(list(_BOXED_RE.finditer(text))):
        content = _braced_content(text, match.end())
        if content is not None:
            return content.strip() or None
    return None


def extract_choice(text: str) -> str | None:
    """A multiple-choice letter A-E: "answer is (C)" / "Answer: C" first ("Answer: c" too,
    when nothing word-like follows), then "(C)" or a lone "C" at the very end. A lower-case
    letter in prose never counts ("the answer is a ...")."""
    explicit = _CHOICE_AFTER_ANSWER_RE.findall(text) or _CHOICE_LOWER_AFTER_ANSWER_RE.findall(text)
    if explicit:
        return explicit[-1].upper()
    for pattern in (_CHOICE_PAREN_AT_END_RE, _CHOICE_LETTER_AT_END_RE):
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


_YESNO_AFTER_ANSWER_RE = re.compile(r"(?i:answer)(?:\s+(?i:is))?[\s:*\"']*\(?(yes|no)\b", re.IGNORECASE)
_YESNO_RE = re.compile(r"(?<![A-Za-z])(yes|no)(?![A-Za-z])", re.IGNORECASE)
_CODE_BLOCK_RE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_yesno(text: str) -> str | None:
    """"yes" or "no": after the last "answer is" / "Answer:" first, else the last standalone
    yes/no word ("Yes.", "no", "**Answer: No**")."""
    explicit = _YESNO_AFTER_ANSWER_RE.findall(text)
    words = explicit or _YESNO_RE.findall(text)
    return words[-1].lower() if words else None


def extract_code(text: str) -> str | None:
    """The code of a reply: its last fenced block (```python ... ```; an unclosed last fence
    runs to the end), else the whole reply when it holds a ``def`` or ``return`` (a bare
    continuation of the function body); None for prose."""
    blocks = [b for b in _CODE_BLOCK_RE.findall(text) if b.strip()]
    if blocks:
        return blocks[-1].rstrip() + "\n"
    if re.search(r"^\s*(def |return\b)", text, re.MULTILINE):
        return text.rstrip() + "\n"
    return None


def extract_answer(text: str, answer_type: str) -> str | None:
    """Dispatch on answer type; raises ValueError only for an unknown type (a config bug)."""
    if answer_type == "number":
        return extract_number_answer(text)
    if answer_type == "boxed":
        return extract_boxed(text)
    if answer_type == "choice":
        return extract_choice(text)
    if answer_type == "yesno":
        return extract_yesno(text)
    if answer_type == "code":
        return extract_code(text)
    raise ValueError(f"unknown answer_type {answer_type!r}; known: {', '.join(ANSWER_TYPES)}")


def normalize_gold(answer: str, answer_type: str) -> str | None:
    """A data set's gold answer in the form extraction produces, e.g. GSM8K's
    "... #### 72" -> "72", a MATH solution -> its boxed content, "(c)" -> "C"."""
    if answer_type == "boxed":
        return extract_boxed(answer) or (" ".join(answer.split()) or None)
    if answer_type == "choice":
        bare = answer.strip().strip("().").upper()
        return bare if len(bare) == 1 and bare in CHOICE_LETTERS else extract_choice(answer)
    if answer_type == "code":  # the gold of a code task is its tests, run by the sandbox
        return answer if answer.strip() else None
    return extract_answer(answer, answer_type)


def _boxed_key(s: str) -> str:
    """Boxed answers compare with spacing and surrounding $ ignored ("\\frac{1}{2}")."""
    return "".join(s.strip().strip("$").split())


def answers_match(pred: str | None, gold: str, answer_type: str) -> bool:
    """Numbers compare by value within 1e-6; boxed answers numerically when both are
    numbers, else as text with spaces ignored; choices by letter."""
    if pred is None:
        return False
    if answer_type == "number":
        return _numbers_close(normalize_number(pred), normalize_number(gold))
    if answer_type == "boxed":
        pred_num, gold_num = normalize_number(pred), normalize_number(gold)
        if pred_num is not None and gold_num is not None:
            return _numbers_close(pred_num, gold_num)
        return _boxed_key(pred) == _boxed_key(gold)
    if answer_type == "choice":
        return pred.strip().upper() == gold.strip().upper()
    if answer_type == "yesno":
        return pred.strip().lower() == gold.strip().lower()
    raise ValueError(f"unknown answer_type {answer_type!r}; known: {', '.join(ANSWER_TYPES)}")


def _numbers_close(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return abs(Decimal(a) - Decimal(b)) <= NUMBER_TOLERANCE
    except ArithmeticError:  # absurdly long digit strings overflow the decimal context
        return False
