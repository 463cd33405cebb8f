"""Lenient parser of a model's Verbalized Sampling answer (k candidates, each with a probability).

Owns: ``parse_vs_answer``, its result types ``Candidate`` and ``ParsedAnswer``, its one error type
``VSParseError``, and ``ParseStats`` (counts parsed / failed / repaired answers over a run, so a
lab can show "parse failures: 3/30"). Stdlib only: no Qt, no llama_cpp. Every function is pure
and runs on whatever thread calls it; a ``ParseStats`` is a plain counter and is not meant to
be shared across threads without a lock.

What it reads (first match wins, in this order):

1. ``json``: the whole answer is JSON (after stripping whitespace).
2. ``json-in-fence``: JSON inside a ``` code fence (an unclosed fence runs to the end).
3. ``xml``: repeated ``<response><text>..</text><probability>..</probability></response>``.
4. ``json-in-prose``: the first ``{..}`` or ``[..]`` in the text that holds candidates.

A ``-truncated`` suffix on the JSON formats means the answer was cut off (e.g. by the token
limit) and was closed after its last complete candidate. JSON may have trailing commas,
single-quoted strings, Python's ``True``/``False``/``None``, raw newlines inside strings, and
``NaN``/``Infinity``. The candidates are the first list found under ``responses``,
``candidates``, ``items``, ``answers`` (and a few more), or a bare list, or any list of objects
with a text field; an object ``{"text": "p"}`` of text -> number pairs is also accepted. Each
candidate is an object with a text field (``text``, ``response``, ``answer``, ``content``, ...)
and a probability field (``probability``, ``prob``, ``p``, ``confidence``, ``weight``, ...), a
``[text, probability]`` pair, or a plain string (no probability).

Weight rules (all applied to the candidates that survive; each one is reported):

- A weight may be a number, a numeric string ("0.3") or a percentage string ("30%", read as 0.3).
- Bare numbers are read as percentages when one of them is above 1 and all stated non-negative
  weights add up to "about 100" (between 80 and 120): 70/20/10 becomes 0.7/0.2/0.1 (never
  clipped to 1). Other numbers above 1 are relative weights and are normalised.
- A negative weight is set to 0 (problem). NaN, infinite, unreadable ("high") or boolean
  weights are problems and count as missing.
- Missing weights share the remaining mass ``1 - sum(known)`` equally (repair); if the known
  weights already sum to 1 or more, the missing ones get 0 (problem). If no candidate has a
  weight, the distribution is uniform (problem).
- If all weights are zero, the distribution is uniform (problem).
- Finally the weights are normalised to sum to 1; a sum off 1 by more than 1e-6 is a repair.

Candidates with an empty text (after stripping whitespace) are dropped (problem); duplicate texts
are kept and noted (problem); a count different from the requested ``k`` is noted (problem).
Nothing fails silently: when no candidate can be read, ``VSParseError`` is raised, with a message
a user can read. It is the only exception ``parse_vs_answer`` raises.

Over 500 lines on purpose: one lenient parser; its repair passes feed each other and are tested
as one.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Candidate", "ParsedAnswer", "VSParseError", "parse_vs_answer", "ParseStats"]

LIST_KEYS = ("responses", "candidates", "items", "answers", "response", "results", "outputs",
             "samples", "options", "completions", "choices", "list", "data")
TEXT_KEYS = ("text", "response", "answer", "content", "candidate", "output", "completion",
             "value", "option", "sample")
PROB_KEYS = ("probability", "prob", "p", "confidence", "weight", "likelihood", "probability_score",
             "score", "percentage", "percent")

MAX_CHARS = 200_000        # longer answers are refused rather than scanned (k=20 is ~10 kB)
_MAX_STARTS = 32           # '{' / '[' positions tried in prose
_SCAN_BUDGET = 2_000_000   # characters scanned in prose, in all, before giving up
_MAX_DEPTH = 6             # how deep to look for the candidate list
_PCT_LOW, _PCT_HIGH = 80.0, 120.0


class VSParseError(ValueError):
    """No candidate could be read from the answer. ``str(error)`` is meant for the user.

    ``internal`` is True only when the parser itself failed unexpectedly (a bug); the answer is
    then treated as unparseable rather than letting another exception escape.
    """

    def __init__(self, message: str, *, internal: bool = False):
        super().__init__(message)
        self.internal = internal


@dataclass(frozen=True)
class Candidate:
    """One verbalized candidate.

    ``weight`` is the stated probability on a 0..1 scale as read (percentages divided by 100,
    negative values kept as stated), or None when missing or unusable (NaN, inf, unreadable).
    ``raw_weight`` is the weight as written in the answer (None when there was none).
    """

    text: str
    weight: float | None
    raw_weight: str | None


@dataclass(frozen=True)
class ParsedAnswer:
    """A parsed answer: ``probabilities[i]`` belongs to ``candidates[i]``; they sum to 1."""

    candidates: tuple[Candidate, ...]
    probabilities: tuple[float, ...]
    repairs: tuple[str, ...]
    problems: tuple[str, ...]
    source_format: str

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(c.text for c in self.candidates)


# ---------------------------------------------------------------- JSON scanning and leniency

def _scan(s: str, start: int, closers: list | None = None) -> int | None:
    """Index just past the bracket matching ``s[start]``, or None (unbalanced / cut off).

    String-aware for both quote characters. If ``closers`` is given, every position just past a
    closing bracket is appended with the stack of still-open brackets at that point.
    """
    stack: list[str] = []
    quote = ""
    i, n = start, len(s)
    while i < n:
        c = s[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c == '"' or c == "'":
            quote = c
        elif c == "{" or c == "[":
            stack.append(c)
        elif c == "}" or c == "]":
            if not stack or stack[-1] != ("{" if c == "}" else "["):
                return None
            stack.pop()
            if not stack:
                return i + 1
            if closers is not None:
                closers.append((i + 1, tuple(stack)))
        i += 1
    return None


_BARE = {"True": "true", "False": "false", "None": "null"}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _lenient(s: str) -> tuple[str, list[str]]:
    """Rewrite near-JSON into JSON: trailing commas, single quotes, Python literals."""
    out: list[str] = []
    notes: set[str] = set()
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == '"':
            j = i + 1
            while j < n and s[j] != '"':
                j += 2 if s[j] == "\\" else 1
            out.append(s[i:j + 1])
            i = j + 1
            continue
        if c == "'":
            buf = ['"']
            j = i + 1
            while j < n and s[j] != "'":
                if s[j] == "\\" and j + 1 < n:
                    buf.append("'" if s[j + 1] == "'" else s[j:j + 2])
                    j += 2
                    continue
                buf.append('\\"' if s[j] == '"' else s[j])
                j += 1
            buf.append('"')
            out.append("".join(buf))
            notes.add("single quotes read as double quotes")
            i = j + 1
            continue
        if c == ",":
            j = i + 1
            while j < n and s[j] in " \t\r\n":
                j += 1
            if j < n and s[j] in "}]":
                notes.add("trailing comma removed")
                i += 1
                continue
        m = _WORD.match(s, i) if (c.isalpha() or c == "_") else None
        if m:
            word = m.group()
            if word in _BARE:
                out.append(_BARE[word])
                notes.add("Python literals True/False/None read as JSON")
            else:
                out.append(word)
            i = m.end()
            continue
        out.append(c)
        i += 1
    return "".join(out), sorted(notes)


_DECODER = json.JSONDecoder(strict=False)


def _loads(s: str) -> tuple[object, list[str]]:
    """Decode JSON, leniently if needed. Raises ValueError (with json's message) on failure."""
    try:
        return _DECODER.decode(s), []
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    except ValueError as strict_error:
        fixed, notes = _lenient(s)
        if not notes:
            raise strict_error
        try:
            return _DECODER.decode(fixed), notes
        except RecursionError:
            raise ValueError("the JSON is nested too deeply") from None
        except ValueError:
            raise strict_error from None


# ---------------------------------------------------------------- finding the candidates

def _key(d: dict, names: tuple[str, ...]) -> tuple[bool, object, str | None]:
    """Look up the first of ``names`` in ``d``, case- and space-insensitively."""
    folded: dict[str, str] = {}
    for k in d:
        if isinstance(k, str):
            folded.setdefault(k.strip().lower(), k)
    for name in names:
        if name in folded:
            return True, d[folded[name]], folded[name]
    return False, None, None


def _is_item(x: object) -> bool:
    if isinstance(x, str):
        return True
    if isinstance(x, dict):
        return _key(x, TEXT_KEYS)[0] or any(isinstance(v, str) for v in x.values())
    if isinstance(x, list):
        return len(x) == 2 and isinstance(x[0], str)
    return False


def _num_like(v: object) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float)):
        return True
    return isinstance(v, str) and _read_number(v)[0] is not None


def _find_list(value: object, notes: list[str], depth: int = 0) -> list | None:
    """The list of candidate items inside a decoded JSON value, or None."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, list):
        if any(_is_item(x) for x in value):
            return value
        for x in value:
            if isinstance(x, (dict, list)):
                found = _find_list(x, notes, depth + 1)
                if found is not None:
                    return found
        return None
    if not isinstance(value, dict):
        return None
    ok, v, _ = _key(value, LIST_KEYS)
    if ok and isinstance(v, list) and any(_is_item(x) for x in v):
        return v
    if ok and isinstance(v, dict):
        found = _find_list(v, notes, depth + 1)
        if found is not None:
            return found
    for k, v in value.items():
        if isinstance(v, list) and v and any(isinstance(x, dict) and _key(x, TEXT_KEYS)[0] for x in v):
            notes.append(f"candidates read from the list under key {_short(str(k))}")
            return v
    for v in value.values():
        if isinstance(v, (dict, list)):
            found = _find_list(v, [], depth + 1)
            if found is not None:
                notes.append("candidates read from a nested list")
                return found
    if _key(value, TEXT_KEYS)[0]:
        notes.append("a single candidate object, not a list")
        return [value]
    if len(value) >= 2 and all(isinstance(k, str) for k in value) and all(_num_like(v) for v in value.values()):
        notes.append("read an object of text: probability pairs")
        return [[k, v] for k, v in value.items()]
    return None


_MISSING = object()


def _item(x: object, index: int, problems: list[str], repairs: set[str]) -> tuple[str, object] | None:
    """(text, raw weight or _MISSING) of one list item, or None if it is not a candidate."""
    if isinstance(x, str):
        return x, _MISSING
    if isinstance(x, list) and len(x) == 2 and isinstance(x[0], str):
        return x[0], x[1]
    if isinstance(x, dict):
        has_text, text, text_key = _key(x, TEXT_KEYS)
        has_p, p, p_key = _key(x, PROB_KEYS)
        if not has_text:
            others = [v for k, v in x.items() if k != p_key and isinstance(v, str)]
            if len(others) == 1:
                has_text, text = True, others[0]
        if not has_text:
            problems.append(f"item {index + 1} has no text field: skipped")
            return None
        if isinstance(text, bool) or text is None:
            text = ""
        elif isinstance(text, (int, float)):
            text = json.dumps(text)
            repairs.add("texts given as numbers read as strings")
        elif not isinstance(text, str):
            problems.append(f"item {index + 1} has a text that is not a string: skipped")
            return None
        return text, (p if has_p else _MISSING)
    kind = "null" if x is None else type(x).__name__
    if isinstance(x, list):
        kind = "list"
    problems.append(f"item {index + 1} is not a candidate (a {kind}): skipped")
    return None


# ---------------------------------------------------------------- weights

_NUM = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf|infinity))\s*(%?)\s*",
                  re.IGNORECASE)


def _read_number(s: str) -> tuple[float | None, bool]:
    """(value, is_percent) of a numeric or percentage string; (None, False) if neither."""
    m = _NUM.fullmatch(s)
    if not m:
        return None, False
    try:
        return float(m.group(1)), bool(m.group(2))
    except (ValueError, OverflowError):
        return None, False


def _to_float(v: int | float) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _raw(v: object) -> str:
    if isinstance(v, str):
        return v
    try:
        return json.dumps(v)
    except (ValueError, TypeError):
        return repr(v)[:40]


def _short(text: str, n: int = 30) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= n else text[: n - 1] + "…")


def _fsum(values) -> float:
    """math.fsum, but inf instead of OverflowError for sums beyond the float range."""
    values = list(values)
    try:
        return math.fsum(values)
    except OverflowError:
        return math.inf


def _g(x: float) -> str:
    return f"{x:.4g}"


def _weights(texts: list[str], raws: list[object], problems: list[str], repairs: list[str]
             ) -> tuple[list[float | None], list[float]]:
    """Stated weights (0..1 scale, None if unusable) and the final probabilities."""
    n = len(texts)
    kinds: list[str] = []      # "missing", "bad", "num", "pct"
    values: list[float] = []
    numeric_strings = False
    for text, raw in zip(texts, raws):
        label = _short(text)
        if raw is _MISSING or raw is None:
            kinds.append("missing")
            values.append(math.nan)
            continue
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            problems.append(f"weight {_short(_raw(raw), 20)} for {label} is not a number: treated as missing")
            kinds.append("bad")
            values.append(math.nan)
            continue
        if isinstance(raw, str):
            v, pct = _read_number(raw)
            if v is None:
                problems.append(f"weight {_short(raw, 20)} for {label} is not a number: treated as missing")
                kinds.append("bad")
                values.append(math.nan)
                continue
            if not pct:
                numeric_strings = True
        else:
            v, pct = _to_float(raw), False
        if not math.isfinite(v):
            problems.append(f"weight {_raw(v) if not isinstance(raw, str) else raw.strip()} for {label} "
                            "is not finite: treated as missing")
            kinds.append("bad")
            values.append(math.nan)
            continue
        kinds.append("pct" if pct else "num")
        values.append(v)
    if numeric_strings:
        repairs.append("weights given as strings read as numbers")

    bare = [v for k, v in zip(kinds, values) if k == "num" and v >= 0]
    pcts = [v for k, v in zip(kinds, values) if k == "pct" and v >= 0]
    total_pct = _fsum(bare) + _fsum(pcts)
    bare_as_pct = bool(bare) and max(bare) > 1 and _PCT_LOW <= total_pct <= _PCT_HIGH
    if bare_as_pct:
        shown = "/".join(_g(v) for k, v in zip(kinds, values) if k == "num")
        if len(shown) > 60:
            shown = shown[:59] + "…"
        repairs.append(f"read {shown} as percentages")
    if pcts:
        repairs.append("percent signs read as percentages")

    stated: list[float | None] = []
    for k, v in zip(kinds, values):
        if k == "pct" or (k == "num" and bare_as_pct):
            stated.append(v / 100.0)
        elif k == "num":
            stated.append(v)
        else:
            stated.append(None)

    eff: list[float | None] = []
    for text, w in zip(texts, stated):
        if w is not None and w < 0:
            problems.append(f"negative weight {_g(w)} for {_short(text)} set to 0")
            w = 0.0
        eff.append(w)

    missing = [i for i, w in enumerate(eff) if w is None]
    if len(missing) == n:
        problems.append("no candidate had a probability: uniform")
        return stated, [1.0 / n] * n
    if missing:
        known = _fsum(w for w in eff if w is not None)
        m = len(missing)
        some = f"{m} candidate{'s' if m > 1 else ''} had no probability"
        rest = 1.0 - known if math.isfinite(known) else 0.0
        if rest > 1e-9:
            repairs.append(f"{some}: given the remaining mass {_g(rest)} equally")
            share = rest / m
        else:
            problems.append(f"{some} and the others already sum to {_g(known)}: set to 0")
            share = 0.0
        for i in missing:
            eff[i] = share

    ws = [float(w) for w in eff]  # type: ignore[arg-type]
    total = _fsum(ws)
    if not math.isfinite(total):          # huge weights: scale down first
        top = max(ws)
        ws = [w / top for w in ws]
        total = _fsum(ws)
    if total <= 0.0:
        problems.append("all weights zero: uniform")
        return stated, [1.0 / n] * n
    if abs(total - 1.0) > 1e-6:
        repairs.append(f"weights normalised from sum {_g(total)}")
    probs = [w / total for w in ws]
    if not all(math.isfinite(p) and p >= 0 for p in probs) or abs(_fsum(probs) - 1.0) > 1e-9:
        problems.append("weights could not be normalised: uniform")   # subnormal corner cases
        return stated, [1.0 / n] * n
    return stated, probs


# ---------------------------------------------------------------- assembling an answer

def _assemble(items: list[tuple[str, object]], fmt: str, k: int | None,
              repairs: list[str], problems: list[str]) -> ParsedAnswer:
    texts: list[str] = []
    raws: list[object] = []
    for i, (text, raw) in enumerate(items):
        text = text.strip()
        if not text:
            problems.append(f"candidate {i + 1} has an empty text: dropped")
            continue
        texts.append(text)
        raws.append(raw)
    if not texts:
        raise VSParseError("no candidate has a non-empty text" if items else "the list of candidates is empty")
    stated, probs = _weights(texts, raws, problems, repairs)
    for text, count in Counter(texts).items():
        if count > 1:
            problems.append(f"duplicate candidate {_short(text)} ({count} times): kept")
    if k is not None and len(texts) != k:
        problems.append(f"expected {k} candidates, got {len(texts)}")
    candidates = tuple(
        Candidate(t, w, None if r is _MISSING or r is None else _raw(r))
        for t, w, r in zip(texts, stated, raws))
    return ParsedAnswer(candidates, tuple(probs), tuple(dict.fromkeys(repairs)), tuple(problems), fmt)


def _from_json_value(value: object, fmt: str, k: int | None, repairs: list[str]) -> ParsedAnswer:
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            inner, inner_notes = _loads(value.strip())
        except ValueError:
            inner = None
        else:
            repairs = repairs + ["the JSON was wrapped in a string"] + inner_notes
            value = inner
    notes: list[str] = []
    lst = _find_list(value, notes)
    if lst is None:
        raise VSParseError("the JSON has no list of candidates")
    problems: list[str] = []
    item_repairs: set[str] = set()
    items = []
    for i, x in enumerate(lst):
        got = _item(x, i, problems, item_repairs)
        if got is not None:
            items.append(got)
    if not items:
        raise VSParseError("the list of candidates is empty" if not lst
                           else "none of the items in the JSON list is a candidate")
    return _assemble(items, fmt, k, repairs + notes + sorted(item_repairs), problems)


def _try_json_span(s: str, fmt: str, k: int | None) -> ParsedAnswer:
    """Parse ``s`` (which starts with '{' or '['); closes a cut-off answer if it must."""
    try:
        value, notes = _loads(s)
    except ValueError as error:
        end = _scan(s, 0)
        if end is not None and s[end:].strip():
            try:
                value, notes = _loads(s[:end])
            except ValueError:
                raise VSParseError(_json_message(error)) from None
            notes = notes + ["text after the JSON ignored"]
        elif end is None:
            return _salvage(s, fmt, k, error)
        else:
            raise VSParseError(_json_message(error)) from None
    return _from_json_value(value, fmt, k, notes)


def _salvage(s: str, fmt: str, k: int | None, error: ValueError) -> ParsedAnswer:
    """A cut-off JSON answer: close it after the last complete item that still parses."""
    closers: list[tuple[int, tuple[str, ...]]] = []
    _scan(s, 0, closers)
    for end, stack in reversed(closers[-24:]):
        closing = "".join("}" if c == "{" else "]" for c in reversed(stack))
        try:
            value, notes = _loads(s[:end] + closing)
        except ValueError:
            try:
                value, notes = _loads(s[:end] + "," + closing)   # ',' then removed as trailing
            except ValueError:
                continue
        try:
            got = _from_json_value(value, fmt + "-truncated", k, notes)
        except VSParseError:
            continue
        n = len(got.candidates)
        return ParsedAnswer(got.candidates, got.probabilities,
                            (f"the answer was cut off: kept the {n} complete candidate{'s' if n > 1 else ''}",)
                            + got.repairs, got.problems, got.source_format)
    raise VSParseError("the JSON is incomplete (cut off?) and no complete candidate could be read")


def _json_message(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"found JSON that could not be read: {error.msg} (line {error.lineno}, column {error.colno})"
    return f"found JSON that could not be read: {error}"


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_RESPONSE = re.compile(r"<(response|candidate|item)\b[^>]*>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)
_OPEN = re.compile(r"<(response|candidate|item)\b[^>]*>", re.IGNORECASE)
_TEXT_TAG = re.compile(r"<(text|answer|content)\b[^>]*>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)
_PROB_TAG = re.compile(r"<(probability|prob|p|confidence|weight)\b[^>]*>(.*?)</\1\s*>",
                       re.DOTALL | re.IGNORECASE)
_ANY_TAG = re.compile(r"<[^<>]*>")


def _try_xml(text: str, k: int | None) -> ParsedAnswer | None:
    blocks = _RESPONSE.findall(text)
    if not blocks:
        return None
    repairs: list[str] = []
    problems: list[str] = []
    items: list[tuple[str, object]] = []
    for _, body in blocks:
        t = _TEXT_TAG.search(body)
        p = _PROB_TAG.search(body)
        if t:
            content = t.group(2)
        else:
            content = _PROB_TAG.sub("", body)
            repairs.append("a <response> without <text>: its content taken as the text")
        content = html.unescape(_ANY_TAG.sub("", content))
        items.append((content, html.unescape(p.group(2)).strip() if p else _MISSING))
    unclosed = len(_OPEN.findall(text)) - len(blocks)
    if unclosed > 0:
        problems.append(f"{unclosed} unclosed <response> tag{'s' if unclosed > 1 else ''} ignored")
    got = _assemble(items, "xml", k, repairs, problems)
    # In XML every weight is a string: reading it as a number is not a repair.
    return ParsedAnswer(got.candidates, got.probabilities,
                        tuple(r for r in got.repairs if r != "weights given as strings read as numbers"),
                        got.problems, got.source_format)


def _parse(text: str, k: int | None) -> ParsedAnswer:
    if not isinstance(text, str):
        raise VSParseError(f"the answer is not text (got {type(text).__name__})")
    if len(text) > MAX_CHARS:
        raise VSParseError(f"the answer is too long to parse ({len(text)} characters)")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise VSParseError(f"k must be a positive whole number, not {k!r}")
    s = text.strip().lstrip("\ufeff")
    if not s:
        raise VSParseError("the answer is empty")
    errors: list[str] = []

    if s[0] in "{[":
        try:
            return _try_json_span(s, "json", k)
        except VSParseError as e:
            errors.append(str(e))
    else:
        try:
            value, notes = _loads(s)       # a JSON string holding the JSON
        except ValueError:
            pass
        else:
            if isinstance(value, str):
                try:
                    return _from_json_value(value, "json", k, notes)
                except VSParseError as e:
                    errors.append(str(e))

    for m in _FENCE.finditer(s):
        body = m.group(2).strip()
        if body[:1] in ("{", "["):
            try:
                return _try_json_span(body, "json-in-fence", k)
            except VSParseError as e:
                errors.append(str(e))

    try:
        xml = _try_xml(s, k)
    except VSParseError as e:
        errors.append(str(e))
    else:
        if xml is not None:
            return xml

    tried = scanned = 0
    skip_until = -1
    for m in re.finditer(r"[{\[]", s):
        i = m.start()
        if i < skip_until or (i == 0 and errors):
            continue
        if tried >= _MAX_STARTS or scanned >= _SCAN_BUDGET:
            break
        tried += 1
        end = _scan(s, i)
        scanned += (len(s) if end is None else end) - i
        span = s[i:] if end is None else s[i:end]
        try:
            got = _try_json_span(span, "json-in-prose", k)
        except VSParseError as e:
            errors.append(str(e))
            if end is not None and not str(e).startswith("found JSON"):
                skip_until = end      # it decoded but held no candidates: don't look inside
            continue
        return got

    if not errors:
        raise VSParseError("no JSON object or <response> tags found")
    # The most specific message: prefer one about candidates over a JSON syntax error.
    for message in errors:
        if not message.startswith("found JSON"):
            return _raise(message)
    return _raise(errors[0])


def _raise(message: str):
    raise VSParseError(message)


def parse_vs_answer(text: str, *, k: int | None = None) -> ParsedAnswer:
    """Read the candidates and their probabilities from a Verbalized Sampling answer.

    ``k`` is the number of candidates asked for; a different count is a problem, not an error.
    Raises ``VSParseError`` (and nothing else) when no candidate can be read. See the module
    docstring for the accepted formats and the weight rules.
    """
    try:
        return _parse(text, k)
    except VSParseError:
        raise
    except Exception as error:  # a bug: keep the promise of one error type, but say so
        raise VSParseError(f"could not read the answer (internal error: {type(error).__name__}: {error})",
                           internal=True) from error


# ---------------------------------------------------------------- counting outcomes

@dataclass
class ParseStats:
    """Counts of parse outcomes over many answers, e.g. the N runs of a comparison.

    Use ``parse`` (parses and counts) or ``record`` (counts a result you already have).
    """

    total: int = 0
    parsed: int = 0
    failed: int = 0
    with_repairs: int = 0
    with_problems: int = 0
    failure_messages: Counter = field(default_factory=Counter)

    def record(self, outcome: ParsedAnswer | VSParseError) -> None:
        self.total += 1
        if isinstance(outcome, ParsedAnswer):
            self.parsed += 1
            self.with_repairs += bool(outcome.repairs)
            self.with_problems += bool(outcome.problems)
        else:
            self.failed += 1
            self.failure_messages[str(outcome)] += 1

    def parse(self, text: str, *, k: int | None = None) -> ParsedAnswer | None:
        """Parse and count one answer; None when it failed (the failure is counted)."""
        try:
            result = parse_vs_answer(text, k=k)
        except VSParseError as error:
            self.record(error)
            return None
        self.record(result)
        return result

    @property
    def failure_rate(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def summary(self) -> str:
        """E.g. "parse failures: 3/30 (2 repaired)"."""
        text = f"parse failures: {self.failed}/{self.total}"
        if self.with_repairs:
            text += f" ({self.with_repairs} repaired)"
        return text
