"""Reading the number out of a model's answer, for the sampled-vs-ideal shift lab.

Owns ``extract_number`` (one answer -> a frozen ``NumberParse``) and ``extract_numbers`` (many).
The lab asks a model for an average, an ideal and "the first value that comes to mind"; models
answer "About 7 hours.", "7-8", "twenty-five minutes, but it depends", "1,200 dollars" ... This
module turns such text into one float, keeping what it read and why it failed, so that the lab can
log unparsable answers instead of guessing.

Rules (each one is tested in ``tests/core/test_shift_numbers.py``):

- The FIRST number in the answer is used; models often ramble on after it.
- Digits: integers, decimals with a point ("7.5", ".5"), a leading minus ("-3", "−3"), thousands
  separators only as a comma followed by exactly three digits ("1,200" -> 1200,
  "12,000.5" -> 12000.5; "7,5" reads as 7, the first number). A "%" is allowed and ignored
  ("30%" -> 30). "2½" -> 2.5. A following "hundred", "thousand", "million" or "billion" multiplies
  ("1.5 million" -> 1500000); "k"/"m" suffixes are not read (5k could be five kilometres).
  Digits glued to letters before them ("mp3", "COVID-19") and ordinals ("1st", "5th") are skipped.
- Qualifiers "about", "around", "approximately", "approx.", "roughly", "nearly", "almost",
  "circa", "~", "≈" do not change the value; they are kept in ``matched``.
- Ranges give their midpoint: "7-8", "7 - 8", "7–8" (en dash), "7—8", "7 to 8",
  "between 7 and 8" (also "from 7 to 8", and with number words: "five to ten").
- Number words: zero..nineteen, twenty..ninety, compounds ("twenty-five", "twenty five"),
  "hundred"/"thousand"/"million"/"billion" ("a hundred", "two hundred and fifty"), "dozen"
  ("a dozen" -> 12, "two dozen" -> 24, "half a dozen" -> 6), "X and a half" (also after digits:
  "2 and a half" -> 2.5). The pronoun "one" is skipped in "no one", "the one", "one of" and similar.
- "half" on its own is NOT read: "half an hour" is 0.5 in hours but 30 in minutes, and the parser
  does not know the unit. Fractions written with a slash ("1/2", "24/7") and times ("7:30") read
  as their first integer. "none"/"nothing" are not read as 0.

``extract_number`` never raises for any ``str``: text without a number gives ``value=None``,
``kind="none"`` and ``error="no number in the answer"``.

Pure stdlib (``re``), no Qt; every function is pure and may run on any thread.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["NumberParse", "KINDS", "NO_NUMBER", "extract_number", "extract_numbers"]

#: The values of ``NumberParse.kind``.
KINDS = ("number", "decimal", "range", "word", "none")
#: ``NumberParse.error`` when the answer holds no number.
NO_NUMBER = "no number in the answer"


@dataclass(frozen=True)
class NumberParse:
    """What ``extract_number`` read from one answer.

    ``value`` is the number (a float) or None; ``raw`` the answer exactly as given; ``matched`` the
    substring of ``raw`` the value came from (with a qualifier such as "about" and a "%" if they
    were there; "" when nothing was read); ``kind`` one of ``KINDS``: "number" (digits, no
    fraction), "decimal" (digits with a fraction), "range" (the midpoint of two numbers), "word"
    (number words), "none" (nothing read); ``error`` a human-readable reason when ``value`` is None,
    else None. ``span`` is ``(start, end)`` of ``matched`` in ``raw`` (None when nothing was read),
    so a GUI can highlight it.
    """

    value: float | None
    raw: str
    matched: str
    kind: str
    error: str | None
    span: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        """True when a number was read."""
        return self.value is not None


# --------------------------------------------------------------------------- digits

_DIGITS = r"(?:[0-9]{1,3}(?:,[0-9]{3}(?![0-9]))+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+"
_FRACTIONS = {"½": 0.5, "¼": 0.25, "¾": 0.75}
_MULTIPLIERS = {"hundred": 100.0, "thousand": 1e3, "million": 1e6, "billion": 1e9}
_MULT = r"(?:\s*(?P<mult>hundred|thousand|million|billion)\b)?"
_HALF = r"(?P<half>\s+and\s+a\s+half\b)?"
_PCT = r"(?:\s?%)?"
# the tail shared by a first number and the second number of a range
_DIGIT_TAIL = (rf"(?P<num>{_DIGITS})(?P<frac>[½¼¾])?(?![0-9])"
               rf"(?!(?i:st|nd|rd|th)\b){_MULT}{_HALF}{_PCT}")
# a first number: not glued to a letter, digit, point or hyphen before it
_DIGIT_FIRST = re.compile(rf"(?<![A-Za-z0-9_.\-−])(?P<sign>[-−])?{_DIGIT_TAIL}|(?<![A-Za-z0-9_.])(?P<lone>[½¼¾])",
                          re.IGNORECASE)
# the second number of a range (anchored with .match)
_DIGIT_AT = re.compile(rf"(?P<sign>[-−])?{_DIGIT_TAIL}|(?P<lone>[½¼¾])", re.IGNORECASE)

# --------------------------------------------------------------------------- words

_UNITS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
_TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_SCALE_WORDS = ("dozen", "hundred", "thousand", "million", "billion")
_ALL_WORDS = ["zero", *_UNITS, *_TEENS, *_TENS, *_SCALE_WORDS]
_WORD = re.compile(r"[A-Za-z]+")
_SPACE = re.compile(r"\s+")
_HALF_DOZEN = re.compile(r"half\s+a\s+dozen\b", re.IGNORECASE)
_AND_A_HALF = re.compile(r"\s+and\s+a\s+half\b", re.IGNORECASE)
_SCALE_NEXT = re.compile(r"\s+(?:dozen|hundred|thousand|million|billion)\b", re.IGNORECASE)
# where a number written in words may start
_WORD_FIRST = re.compile(
    r"\b(?:half\s+a\s+dozen|an?(?=\s+(?:dozen|hundred|thousand|million|billion)\b)|"
    + "|".join(sorted(_ALL_WORDS, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)
# "one" used as a pronoun, not a count
_ONE_BEFORE = re.compile(r"\b(?:no|the|this|that|which|each|any|every|some|another)\s+$", re.IGNORECASE)
_ONE_AFTER = re.compile(r"\s+(?:of|another|who|which|that)\b", re.IGNORECASE)

# --------------------------------------------------------------------------- ranges and qualifiers

_QUALIFIER = re.compile(
    r"(?:\b(?:about|around|approximately|approx\.?|roughly|nearly|almost|circa)\s+|[~≈]\s*)$", re.IGNORECASE)
_BETWEEN = re.compile(r"\bbetween\s+(?:(?:about|around|approximately|roughly)\s+)?$", re.IGNORECASE)
_RANGE_SEP = re.compile(r"\s*[-–—]\s*|\s+to\s+", re.IGNORECASE)
_AND_SEP = re.compile(r"\s+and\s+", re.IGNORECASE)


@dataclass(frozen=True)
class _Num:
    value: float
    start: int
    end: int
    kind: str  # "number" | "decimal" | "word"


def _from_digit_match(m: re.Match) -> _Num:
    if m.group("lone"):
        return _Num(_FRACTIONS[m.group("lone")], m.start(), m.end(), "decimal")
    num = m.group("num")
    value = float(num.replace(",", ""))
    decimal = "." in num
    if m.group("frac"):
        value += _FRACTIONS[m.group("frac")]
        decimal = True
    if m.group("mult"):
        value *= _MULTIPLIERS[m.group("mult").lower()]
    if m.group("half"):
        value += 0.5
        decimal = True
    if m.group("sign"):
        value = -value
    return _Num(value, m.start(), m.end(), "decimal" if decimal else "number")


def _word_at(text: str, pos: int) -> _Num | None:
    """Parse number words starting exactly at ``pos``; None if there is none."""
    m = _HALF_DOZEN.match(text, pos)
    if m:
        return _Num(6.0, pos, m.end(), "word")
    total = 0.0
    current = 0.0
    last = None          # type of the last word read: unit, teen, tens, hundred, big, dozen, zero, a
    end = pos
    i = pos
    first = True
    while True:
        hyphen = False
        if first:
            j = i
        else:
            an = _AND_SEP.match(text, i)
            sp = _SPACE.match(text, i)
            if an and last in ("hundred", "big"):
                j = an.end()
            elif text.startswith("-", i):
                j = i + 1
                hyphen = True
            elif sp:
                j = sp.end()
            else:
                break
        w = _WORD.match(text, j)
        if not w:
            break
        word = w.group(0).lower()
        if hyphen and (last != "tens" or word not in _UNITS):
            break   # only "twenty-five"; "five-six" is a range, read by the caller
        if word in ("a", "an"):
            if not first:
                break
            if not _SCALE_NEXT.match(text, w.end()):
                break
            current, last = 1.0, "a"
        elif word == "zero":
            if not first:
                break
            current, last = 0.0, "zero"
            end, i, first = w.end(), w.end(), False
            break
        elif word in _UNITS:
            if last in ("unit", "teen", "a", "dozen"):
                break
            current += _UNITS[word]
            last = "unit"
        elif word in _TEENS:
            if last in ("unit", "teen", "tens", "a", "dozen"):
                break
            current += _TEENS[word]
            last = "teen"
        elif word in _TENS:
            if last in ("unit", "teen", "tens", "a", "dozen"):
                break
            current += _TENS[word]
            last = "tens"
        elif word == "hundred":
            if last in ("hundred", "dozen") or current >= 100:
                break
            current = (current or 1.0) * 100
            last = "hundred"
        elif word in ("thousand", "million", "billion"):
            if last == "big" and current == 0:
                break
            total += (current or 1.0) * _MULTIPLIERS[word]
            current = 0.0
            last = "big"
        elif word == "dozen":
            if last in ("dozen", "hundred", "big"):
                break
            current = (current or 1.0) * 12
            last = "dozen"
        else:
            break
        end = i = w.end()
        first = False
    if first:
        return None
    value = total + current
    half = _AND_A_HALF.match(text, end)
    if half:
        value += 0.5
        end = half.end()
    return _Num(value, pos, end, "word")


def _is_pronoun_one(text: str, m: re.Match) -> bool:
    if m.group(0).lower() != "one":
        return False
    return bool(_ONE_BEFORE.search(text, max(0, m.start() - 20), m.start()) or _ONE_AFTER.match(text, m.end()))


def _first_number(text: str) -> _Num | None:
    digit = _DIGIT_FIRST.search(text)
    word = None
    for m in _WORD_FIRST.finditer(text):
        if digit is not None and m.start() > digit.start():
            break
        if _is_pronoun_one(text, m):
            continue
        word = _word_at(text, m.start())
        if word is not None:
            break
    if word is not None and (digit is None or word.start < digit.start()):
        return word
    return _from_digit_match(digit) if digit is not None else None


def _number_at(text: str, pos: int) -> _Num | None:
    m = _DIGIT_AT.match(text, pos)
    if m:
        return _from_digit_match(m)
    if _WORD_FIRST.match(text, pos):
        return _word_at(text, pos)
    return None


def _parse(text: str) -> NumberParse:
    if not text.strip():
        return NumberParse(None, text, "", "none", f"{NO_NUMBER} (the answer is empty)")
    first = _first_number(text)
    if first is None:
        return NumberParse(None, text, "", "none", NO_NUMBER)
    start, end, value, kind = first.start, first.end, first.value, first.kind
    between = _BETWEEN.search(text, max(0, start - 40), start)
    sep = (_AND_SEP if between else _RANGE_SEP).match(text, end)
    if sep:
        second = _number_at(text, sep.end())
        if second is not None:
            value, end, kind = (first.value + second.value) / 2, second.end, "range"
            if between:
                start = between.start()
    if not (kind == "range" and between):
        q = _QUALIFIER.search(text, max(0, start - 20), start)
        if q:
            start = q.start()
    if not math.isfinite(value):
        return NumberParse(None, text, text[start:end], "none", "the number is too large to represent",
                           (start, end))
    return NumberParse(float(value) + 0.0, text, text[start:end], kind, None, (start, end))


def extract_number(text: str) -> NumberParse:
    """The first number in ``text`` as a ``NumberParse`` (rules in the module docstring).

    Never raises for a ``str`` (None is read as an empty answer, other objects via ``str()``).
    """
    if text is None:
        text = ""
    elif not isinstance(text, str):
        text = str(text)
    try:
        return _parse(text)
    except Exception as exc:  # pragma: no cover - a parser bug must not end a run
        return NumberParse(None, text, "", "none", f"could not read the answer ({type(exc).__name__}: {exc})")


def extract_numbers(texts: Iterable[str]) -> list[NumberParse]:
    """``extract_number`` of every text, in order."""
    return [extract_number(t) for t in texts]
