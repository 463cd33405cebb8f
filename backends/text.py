"""Text from outside made valid Unicode: the one cleaner every boundary uses.

Owns: ``clean_text`` (any ``str`` as text that encodes to UTF-8: surrogate pairs joined, bytes
that Python smuggled in as ``surrogateescape`` characters decoded, any other lone surrogate
replaced by U+FFFD), ``clean_json`` (the same for every string inside parsed JSON) and
``SurrogateJoiner`` (a stream of text pieces, such as a server's tokens, in which a surrogate
pair may be split across two pieces) and ``Utf8Stream`` (token bytes, or token texts, to text
without ever splitting a character).

Where such text comes from: a command-line argument with invalid UTF-8 bytes (Python decodes
``argv`` with ``surrogateescape``), a pasted string, a JSON string with ``\\ud83d`` escapes (a
server that splits an emoji between two tokens sends each half as its own token). Python keeps
lone surrogates in a ``str``, but ``str.encode("utf-8")`` refuses them, so llama.cpp's tokenizer
call, SQLite, a JSON file and a terminal would each fail with ``UnicodeEncodeError``.

Pure stdlib, no Qt, no I/O: any thread.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

__all__ = ["clean_text", "clean_json", "SurrogateJoiner", "Utf8Stream", "REPLACEMENT", "loads_json"]

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")
_HIGH = re.compile("[\ud800-\udbff]$")


def _lone_to_bytes(err: UnicodeError):
    """Encode error handler: a ``surrogateescape`` character (U+DC80..U+DCFF) back to its byte,
    any other lone surrogate to the UTF-8 bytes of U+FFFD."""
    if not isinstance(err, UnicodeEncodeError):
        raise err
    out = bytearray()
    for ch in err.object[err.start:err.end]:
        c = ord(ch)
        out += bytes([c - 0xDC00]) if 0xDC80 <= c <= 0xDCFF else REPLACEMENT.encode("utf-8")
    return bytes(out), err.end


codecs.register_error("samplescope-lone-surrogates", _lone_to_bytes)


def clean_text(text: Any) -> str:
    """``text`` as a ``str`` that is valid Unicode (see the module docstring). Text that is
    already valid is returned as it is (the common case costs one regex scan)."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if _SURROGATE.search(text) is None:
        return text
    # join the pairs first (two UTF-16 halves in a str are one character)
    joined = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if _SURROGATE.search(joined) is None:
        return joined
    raw = joined.encode("utf-8", "samplescope-lone-surrogates")
    return raw.decode("utf-8", "replace")


def clean_json(obj: Any) -> Any:
    """``obj`` (parsed JSON: dicts, lists, strings, numbers) with every string, keys included,
    passed through ``clean_text``. Values without a bad string are returned unchanged."""
    if isinstance(obj, str):
        return clean_text(obj)
    if isinstance(obj, list):
        return [clean_json(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(clean_json(v) for v in obj)
    if isinstance(obj, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_json(v) for k, v in obj.items()}
    return obj


def loads_json(data: str | bytes) -> Any:
    """``json.loads`` for text from outside (a server, a file the user picked): every failure
    is a ``ValueError`` with a readable message, including JSON nested so deep that Python's
    parser gives up (it raises ``RecursionError``, not a ``ValueError``, past about 1,000
    levels) and bytes that are not UTF-8."""
    if data is None:
        raise ValueError("no text at all")
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply to read") from None


class SurrogateJoiner:
    """Text pieces in, valid text out: a piece that ends with the first half of a surrogate
    pair waits for the next piece, whose start may complete it. ``push`` returns what can be
    shown now; ``flush`` what is left (a lone half becomes U+FFFD)."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = ""

    def push(self, piece: str) -> str:
        text = self._held + (piece or "")
        self._held = ""
        if _HIGH.search(text):
            self._held, text = text[-1], text[:-1]
        return clean_text(text)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return clean_text(held)

    @property
    def pending(self) -> bool:
        return bool(self._held)


class Utf8Stream:
    """Incremental decoding of a token stream into text that is never split mid-character:
    ``push`` takes a token's bytes (the bytes of a partial UTF-8 character wait for the rest;
    invalid bytes become U+FFFD), ``push_text`` a token's text as a server sent it (half of a
    surrogate pair waits for the other half). ``flush`` returns what is still waiting."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._joiner = SurrogateJoiner()

    def push(self, data: bytes) -> str:
        return self._joiner.flush() + self._dec.decode(data)

    def push_text(self, text: str) -> str:
        return self._dec.decode(b"", final=True) + self._joiner.push(text)

    def flush(self) -> str:
        return self._dec.decode(b"", final=True) + self._joiner.flush()

    @property
    def pending(self) -> bool:
        return bool(self._dec.getstate()[0]) or self._joiner.pending
