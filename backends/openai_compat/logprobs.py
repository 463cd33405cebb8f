"""Log-probabilities as OpenAI-compatible servers send them, read into one shape.

Owns: ``TokenLogprob`` and ``AltLogprob`` (one generated token and its alternatives, whatever
the wire shape), ``parse_logprobs`` (every shape these servers send: OpenAI legacy completions,
chat ``content`` lists, llama.cpp's native ``completion_probabilities`` and ``probs``),
``entropy_lower_bound`` (what the top-N tells of the full distribution's entropy), ``Malformed``
(a known shape with wrong types inside) and the small readers the step assembly shares
(``probability``, ``piece_text``, ``same_token``, ``safe_parse``, ``empty_chat_logprobs``).

Pure functions of parsed JSON: no I/O, no Qt, any thread (in practice the model worker that runs
``OpenAICompatBackend.stream`` or ``probe``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

from ..text import clean_text

__all__ = [
    "AltLogprob",
    "TokenLogprob",
    "Malformed",
    "parse_logprobs",
    "safe_parse",
    "entropy_lower_bound",
    "probability",
    "piece_text",
    "same_token",
    "empty_chat_logprobs",
]

_BYTES_TOKEN = re.compile(r"^bytes:((?:\\x[0-9a-fA-F]{2})+)$")


@dataclass(frozen=True, slots=True)
class AltLogprob:
    """One alternative of a token as a server reported it."""

    text: str
    logprob: float
    id: int | None = None
    bytes: bytes | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token as a server reported it, whatever the wire shape.

    ``logprob`` is None when the server gave no value for the chosen token itself.
    ``bytes`` is None when the server sent no bytes (then ``text`` is all we know).
    """

    text: str
    logprob: float | None
    id: int | None = None
    bytes: bytes | None = None
    top: tuple[AltLogprob, ...] = ()


class Malformed(ValueError):
    """A logprobs structure of a known shape with wrong types inside."""


def parse_logprobs(obj: Any) -> list[TokenLogprob] | None:
    """Read the tokens and alternatives out of any log-probability shape these servers send.

    ``obj`` may be a whole response or chunk (``choices[0]`` is read), one choice (its
    ``logprobs``), a logprobs object, a llama.cpp native response, or a list of entries.
    Returns None when there are no log-probabilities (``null``, absent, or a shape we do not
    know), a list (possibly empty) otherwise. Raises ``ValueError`` for a known shape with
    wrong types inside.

    Shapes read:

    - OpenAI legacy completions (also vLLM, llama-cpp-python): ``{"tokens": [...],
      "token_logprobs": [...], "top_logprobs": [{text: logprob, ...} | null, ...],
      "text_offset": [...]}``; ``top_logprobs`` entries may also be lists of
      ``{"token", "logprob"}``; a token written ``"bytes:\\xe2\\x80"`` (OpenAI, for partial
      characters) is read as those bytes.
    - Chat (OpenAI, vLLM, Ollama, llama-cpp-python) and llama.cpp's server for both endpoints:
      ``{"content": [{"token", "logprob", "bytes": [int] | null, "id"?: int,
      "top_logprobs": [{"token", "logprob", "bytes", "id"?}]}]}``.
    - llama.cpp native ``/completion``: ``{"completion_probabilities": [entry, ...]}`` with the
      entries above, or with ``prob``/``top_probs`` (``post_sampling_probs``), or the old
      ``{"content": "B", "probs": [{"tok_str": "B", "prob": 0.44}]}``; also ``"probs": [...]``.
    """
    if obj is None:
        return None
    if isinstance(obj, list):
        return [_entry(e) for e in obj]
    if not isinstance(obj, dict):
        raise Malformed(f"log-probabilities of type {type(obj).__name__}")
    if isinstance(obj.get("choices"), list):
        choices = obj["choices"]
        return parse_logprobs(choices[0]) if choices else None
    if "logprobs" in obj and not _is_entry(obj):
        got = parse_logprobs(obj["logprobs"])
        if got is not None or "completion_probabilities" not in obj:
            return got
    if isinstance(obj.get("completion_probabilities"), list):
        return [_entry(e) for e in obj["completion_probabilities"]]
    if isinstance(obj.get("content"), list):
        return [_entry(e) for e in obj["content"]]
    if "tokens" in obj and "token_logprobs" in obj:
        return _legacy(obj)
    if isinstance(obj.get("probs"), list) and not _is_entry(obj):
        return [_entry(e) for e in obj["probs"]]
    return None



def safe_parse(obj: Any) -> list[TokenLogprob] | None:
    """``parse_logprobs``, with a malformed shape read as no log-probabilities (the probe)."""
    try:
        return parse_logprobs(obj)
    except ValueError:
        return None


def _is_entry(d: dict) -> bool:
    return any(k in d for k in ("logprob", "prob", "tok_str", "token"))


def _legacy(obj: dict) -> list[TokenLogprob]:
    tokens, lps = obj.get("tokens"), obj.get("token_logprobs")
    tops = obj.get("top_logprobs")
    if not isinstance(tokens, list) or not isinstance(lps, list):
        raise Malformed("tokens/token_logprobs are not lists")
    if tops is None:
        tops = []
    if not isinstance(tops, list):
        raise Malformed("top_logprobs is not a list")
    out = []
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str):
            raise Malformed("a token is not a string")
        text, raw = _token_text(tok)
        lp = _lp(_num(lps[i])) if i < len(lps) else None
        top = _alts(tops[i]) if i < len(tops) else ()
        if lp is None:
            lp = _find(top, None, raw, text)
        out.append(TokenLogprob(text, lp, None, raw, top))
    return out


def _entry(e: Any) -> TokenLogprob:
    if not isinstance(e, dict):
        raise Malformed("a token entry is not an object")
    text = _first(e, ("token", "tok_str", "content", "text"))
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise Malformed("a token's text is not a string")
    raw = _bytes(e.get("bytes"))
    if raw is None:
        text, raw = _token_text(text)
    tid = _int(e.get("id", e.get("token_id")))
    lp = _logprob_of(e)
    alts = _first(e, ("top_logprobs", "top_probs", "probs"))
    top = _alts(alts)
    if lp is None:
        lp = _find(top, tid, raw, text)
    return TokenLogprob(text, lp, tid, raw, top)


def _first(d: dict, keys: Iterable[str]) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None


def _alts(x: Any) -> tuple[AltLogprob, ...]:
    if x is None:
        return ()
    out = []
    if isinstance(x, dict):  # legacy: {text: logprob}
        for k, v in x.items():
            lp = _lp(_num(v))
            if lp is None:
                continue
            text, raw = _token_text(str(k))
            out.append(AltLogprob(text, lp, None, raw))
        return tuple(out)
    if not isinstance(x, list):
        raise Malformed("top_logprobs is neither a list nor an object")
    for a in x:
        if not isinstance(a, dict):
            raise Malformed("an alternative is not an object")
        lp = _logprob_of(a)
        if lp is None:
            continue
        text = _first(a, ("token", "tok_str", "text"))
        text = "" if text is None else text
        if not isinstance(text, str):
            raise Malformed("an alternative's text is not a string")
        raw = _bytes(a.get("bytes"))
        if raw is None:
            text, raw = _token_text(text)
        out.append(AltLogprob(text, lp, _int(a.get("id", a.get("token_id"))), raw))
    return tuple(out)


def _logprob_of(d: dict) -> float | None:
    if d.get("logprob") is not None:
        return _lp(_num(d["logprob"]))
    if d.get("prob") is not None:
        p = _num(d["prob"])
        if p is None:
            return None
        return _lp(math.log(p)) if p > 0 else float("-inf")
    return None


def _find(top: tuple[AltLogprob, ...], tid: int | None, raw: bytes | None, text: str) -> float | None:
    for a in top:
        if same_token(a.id, a.bytes, a.text, tid, raw, text):
            return a.logprob
    return None


def same_token(id_a: int | None, bytes_a: bytes | None, text_a: str,
               id_b: int | None, bytes_b: bytes | None, text_b: str) -> bool:
    """Whether two reported tokens are the same one: by id when both have one, else by bytes
    when both have them, else by text."""
    if id_a is not None and id_b is not None:
        return id_a == id_b
    if bytes_a is not None and bytes_b is not None:
        return bytes_a == bytes_b
    return text_a == text_b


def _lp(x: float | None) -> float | None:
    """A log-probability as a probability can have it: at most 0. Servers send tiny positive
    values from float noise (1e-7), and a faulty or hostile one anything (1e308, whose exp
    overflows); both mean "probability 1", never more."""
    return None if x is None else min(x, 0.0)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        if x is None:
            return None
        raise Malformed(f"a log-probability is {type(x).__name__}, not a number")
    x = float(x)
    if math.isnan(x) or x == float("inf"):
        return None
    return x


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _bytes(x: Any) -> bytes | None:
    if x is None:
        return None
    if not isinstance(x, list) or not all(isinstance(b, int) and 0 <= b <= 255 for b in x):
        raise Malformed("a token's bytes are not a list of byte values")
    return bytes(x)


def _token_text(text: str) -> tuple[str, bytes | None]:
    """OpenAI writes a token holding part of a UTF-8 character as ``bytes:\\xe2\\x80``."""
    m = _BYTES_TOKEN.match(text)
    if not m:
        return text, None
    raw = bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-fA-F]{2})", m.group(1)))
    return raw.decode("utf-8", errors="replace"), raw


def piece_text(text: str, raw: bytes | None) -> str:
    """A token as ``Step.piece`` shows it: its bytes decoded, or ``<0xE2>`` escapes for a
    partial character; the server's text when it sent no bytes."""
    if raw is None:
        return clean_text(text)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<0x{b:02X}>" for b in raw)


def probability(logprob: float | None) -> float:
    """``exp(logprob)``; 0.0 for no value or one too small for a float."""
    if logprob is None or logprob < -745.0:
        return 0.0
    return math.exp(min(logprob, 0.0))


def entropy_lower_bound(ps: Iterable[float], n_requested: int | None = None) -> float:
    """A lower bound (nats) on the entropy of a distribution of which only ``ps`` (the top-N
    probabilities a server returned) are known: ``sum(-p log p)`` over them, plus the unseen mass
    ``m = 1 - sum(ps)`` times ``-log(c)``, ``c = min(m, the smallest of the first n_requested
    probabilities)``, an upper bound of every unseen probability."""
    shown = sorted((p for p in ps if p > 0.0), reverse=True)
    if not shown:
        return 0.0
    h = math.fsum(-p * math.log(p) for p in shown)
    m = 1.0 - math.fsum(shown)
    if m > 1e-12:
        k = min(n_requested, len(shown)) if n_requested and n_requested > 0 else len(shown)
        c = min(shown[k - 1], m)
        h += m * -math.log(c)
    return max(h, 0.0)


def empty_chat_logprobs(x: Any) -> bool:
    """A chat ``logprobs`` object that carries nothing (``{"content": null}``), not an unknown
    shape."""
    return isinstance(x, dict) and x.get("content") is None and set(x) <= {"content", "refusal"}

