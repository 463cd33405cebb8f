"""Number extraction of the shift lab: every documented rule on hand-written answers, plus a
property test that no text makes the parser raise."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.labs.shift.numbers import KINDS, NO_NUMBER, NumberParse, extract_number, extract_numbers


@pytest.mark.parametrize("text, value, kind, matched", [
    # plain digits, first number wins
    ("7", 7, "number", "7"),
    ("42 hours", 42, "number", "42"),
    ("I think 15 minutes, maybe 20 if busy", 15, "number", "15"),
    (" 3\n\nQ: next question 99", 3, "number", "3"),
    # decimals
    ("7.5", 7.5, "decimal", "7.5"),
    ("about 0.25 of an hour", 0.25, "decimal", "about 0.25"),
    (".5 hours", 0.5, "decimal", ".5"),
    ("7. That's it.", 7, "number", "7"),
    # thousands separators: a comma followed by exactly three digits
    ("1,200", 1200, "number", "1,200"),
    ("$12,000.5 a year", 12000.5, "decimal", "12,000.5"),
    ("1,000,000 steps", 1_000_000, "number", "1,000,000"),
    ("7,5", 7, "number", "7"),           # not a decimal comma: the first number is 7
    ("1,2000", 1, "number", "1"),        # four digits after the comma: not a separator
    ("3, 4, 5", 3, "number", "3"),
    # negatives
    ("-3", -3, "number", "-3"),
    ("It is −4 degrees", -4, "number", "−4"),
    ("(-2.5)", -2.5, "decimal", "-2.5"),
    # qualifiers keep the value and appear in matched
    ("About 7 hours.", 7, "number", "About 7"),
    ("around 8", 8, "number", "around 8"),
    ("~7", 7, "number", "~7"),
    ("≈ 9", 9, "number", "≈ 9"),
    ("approximately 11.3 minutes", 11.3, "decimal", "approximately 11.3"),
    ("roughly 100", 100, "number", "roughly 100"),
    # percent
    ("30%", 30, "number", "30%"),
    ("about 12 % of them", 12, "number", "about 12 %"),
    # ranges -> midpoint
    ("7-8", 7.5, "range", "7-8"),
    ("7 - 8 hours", 7.5, "range", "7 - 8"),
    ("7 to 8", 7.5, "range", "7 to 8"),
    ("7–8", 7.5, "range", "7–8"),
    ("7—9", 8, "range", "7—9"),
    ("between 7 and 8", 7.5, "range", "between 7 and 8"),
    ("Between 10 and 20 minutes.", 15, "range", "Between 10 and 20"),
    ("from 3 to 4 hours", 3.5, "range", "3 to 4"),
    ("about 2-3 cups", 2.5, "range", "about 2-3"),
    ("10%-20%", 15, "range", "10%-20%"),
    ("-5 to -3", -4, "range", "-5 to -3"),
    ("1.5-2", 1.75, "range", "1.5-2"),
    ("five to ten", 7.5, "range", "five to ten"),
    ("between five and 7", 6, "range", "between five and 7"),
    ("five-six", 5.5, "range", "five-six"),
    # not ranges
    ("7 and 8", 7, "number", "7"),       # "and" is a range only after "between"
    ("5-year-old kids: 3", 5, "number", "5"),
    ("7 to be safe", 7, "number", "7"),
    # words
    ("zero", 0, "word", "zero"),
    ("Zero drinks.", 0, "word", "Zero"),
    ("seven", 7, "word", "seven"),
    ("Thirteen minutes", 13, "word", "Thirteen"),
    ("twenty", 20, "word", "twenty"),
    ("ninety", 90, "word", "ninety"),
    ("twenty-five minutes", 25, "word", "twenty-five"),
    ("twenty five", 25, "word", "twenty five"),
    ("about forty-two", 42, "word", "about forty-two"),
    ("a hundred", 100, "word", "a hundred"),
    ("hundred", 100, "word", "hundred"),
    ("two hundred and fifty dollars", 250, "word", "two hundred and fifty"),
    ("twenty five hundred", 2500, "word", "twenty five hundred"),
    ("one thousand two hundred", 1200, "word", "one thousand two hundred"),
    ("a dozen", 12, "word", "a dozen"),
    ("two dozen eggs", 24, "word", "two dozen"),
    ("half a dozen", 6, "word", "half a dozen"),
    ("two and a half hours", 2.5, "word", "two and a half"),
    ("twenty twenty", 20, "word", "twenty"),   # two tens do not combine
    # "and a half", fractions, multipliers after digits
    ("2 and a half", 2.5, "decimal", "2 and a half"),
    ("2½ hours", 2.5, "decimal", "2½"),
    ("½", 0.5, "decimal", "½"),
    ("1.5 million", 1_500_000, "decimal", "1.5 million"),
    ("3 thousand steps", 3000, "number", "3 thousand"),
    # skipped look-alikes before the real number
    ("No one knows, maybe 5", 5, "number", "5"),
    ("The one I'd pick is 8", 8, "number", "8"),
    ("one of the best answers is 4", 4, "number", "4"),
    ("Since COVID-19 it is 12", 12, "number", "12"),
    ("the 1st number that comes to mind is 9", 9, "number", "9"),
    ("mp3 players: 6", 6, "number", "6"),
    ("one", 1, "word", "one"),
    ("one hour", 1, "word", "one"),
    ("someone often waits 10", 10, "number", "10"),   # no "one"/"ten" inside words
])
def test_documented_rules(text, value, kind, matched):
    r = extract_number(text)
    assert r.value == pytest.approx(value, abs=1e-12)
    assert isinstance(r.value, float)
    assert r.kind == kind and r.matched == matched and r.error is None and r.raw == text
    assert r.span is not None and text[r.span[0]:r.span[1]] == matched
    assert r.ok


@pytest.mark.parametrize("text", ["no idea", "I cannot answer that.", "half an hour", "none", "It depends.",
                                  "lots", "dozens of them", "phone", "often"])
def test_no_number(text):
    r = extract_number(text)
    assert r == NumberParse(None, text, "", "none", NO_NUMBER, None)
    assert not r.ok


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_answer_says_so(text):
    r = extract_number(text)
    assert r.value is None and r.kind == "none" and NO_NUMBER in r.error and "empty" in r.error


def test_overflow_is_an_error_not_inf():
    r = extract_number("9" * 400)
    assert r.value is None and r.kind == "none" and "too large" in r.error


def test_non_str_input_does_not_raise():
    assert extract_number(None).error is not None
    assert extract_number(12).value == 12.0


def test_extract_numbers_keeps_order():
    out = extract_numbers(["3", "x", "four"])
    assert [r.value for r in out] == [3.0, None, 4.0]
    assert [r.kind for r in out] == ["number", "none", "word"]


def test_frozen():
    r = extract_number("5")
    with pytest.raises(Exception):
        r.value = 6


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_never_raises(text):
    r = extract_number(text)
    assert isinstance(r, NumberParse)
    assert r.raw == text and r.kind in KINDS
    if r.value is None:
        assert r.kind == "none" and r.error
        assert not r.error.startswith("could not read")   # the parser's own safety net did not fire
    else:
        assert math.isfinite(r.value) and r.error is None
        assert text[r.span[0]:r.span[1]] == r.matched


_NUMBERISH = st.text(alphabet=list("0123456789 .,-–~%½abdehnortuvwxyz"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(_NUMBERISH)
def test_number_like_text_never_raises(text):
    r = extract_number(text)
    assert isinstance(r, NumberParse) and r.kind in KINDS
    assert (r.value is None) == (r.error is not None)
    assert r.error is None or not r.error.startswith("could not read")


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["", " hours", " minutes.", "!"]),
       st.sampled_from(["", "About ", "I'd say ", "A: "]))
def test_integers_round_trip(n, tail, head):
    r = extract_number(f"{head}{n}{tail}")
    assert r.value == float(n) and r.kind == "number"
    r = extract_number(f"{head}{n:,}{tail}")   # with thousands separators
    assert r.value == float(n)
