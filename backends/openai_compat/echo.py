"""Prompt log-probabilities from a server: the prompt echoed back with each token's log-probability.

Owns: ``EchoedToken`` (one token of the echoed text: where it starts in the text, and what the
server reported about it), ``echo_request`` (the ``/v1/completions`` body: ``echo`` with
``logprobs`` and one generated token, because llama-cpp-python takes ``max_tokens: 0`` for
"no limit"), ``read_echo`` (the answer read into the text's own tokens, the generated one
left out) and ``echoes`` (whether those tokens spell the text sent). The capability probe asks for it once (``ServerCapabilities.echo_logprobs``); the
prompt X-ray (``app.core.scoring.score_remote``) uses it through
``OpenAICompatBackend.score_prompt``.

What a server gives: vLLM and llama-cpp-python's server (started with ``--logits_all true``)
answer ``echo`` with the legacy ``logprobs`` object covering the prompt's tokens, the first one's
``token_logprobs`` entry null (nothing precedes it in what they report; llama-cpp-python does
not echo the BOS token). llama.cpp's C++ server and OpenAI's current models do not echo
log-probabilities: the probe finds that and the X-ray says so.

Pure: parsed JSON in, records out; no I/O, no Qt, any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .logprobs import Malformed, TokenLogprob, parse_logprobs

__all__ = ["EchoedToken", "echo_request", "read_echo", "echoes"]


@dataclass(frozen=True, slots=True)
class EchoedToken:
    """One token of the echoed text: ``offset``, the character where it starts in the text
    sent, and ``token``, what the server reported (``logprob`` None for the first)."""

    offset: int
    token: TokenLogprob


def echo_request(text: str, model: str | None, top_n: int) -> dict[str, Any]:
    """The body that asks for ``text``'s own tokens with ``top_n`` alternatives each."""
    body: dict[str, Any] = {"prompt": text, "max_tokens": 1, "temperature": 0, "echo": True,
                            "logprobs": max(1, int(top_n)), "stream": False}
    if model:
        body["model"] = model
    return body


def read_echo(obj: Any, text: str) -> list[EchoedToken] | None:
    """The tokens of ``text`` in an answer to ``echo_request`` (None when the answer holds no
    echoed log-probabilities). Where each token starts comes from ``text_offset`` when the
    server sends it, else from the token texts' lengths; tokens starting at or after the end of
    ``text`` (the generated one) are left out. Raises ``Malformed`` for a known shape with wrong
    types inside."""
    try:
        choice = obj["choices"][0]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(choice, dict):
        return None
    raw = choice.get("logprobs")
    tokens = parse_logprobs(raw) if raw is not None else None
    if not tokens:
        return None
    offsets = raw.get("text_offset") if isinstance(raw, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == len(tokens)
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += len(t.bytes.decode("utf-8", errors="replace")) if t.bytes is not None else len(t.text)
    out = [EchoedToken(int(o), t) for o, t in zip(offsets, tokens) if int(o) < len(text)]
    if any(b.offset < a.offset for a, b in zip(out, out[1:])):
        raise Malformed("the echoed tokens' text offsets go backwards")
    return out or None


def _ascii(s: str) -> str:
    return "".join(c for c in s if c.isascii())


def echoes(tokens: list[EchoedToken], text: str) -> bool:
    """Whether ``tokens`` spell ``text`` (a server that ignored ``echo`` sends only what it
    generated). Compared on ASCII characters only: a server without token bytes may show a
    character split across two tokens as U+FFFD or not at all; a leading special token the
    server echoes (vLLM echoes the BOS, as ``<bos>``) may precede the text."""
    spelled = "".join(t.token.bytes.decode("utf-8", errors="replace") if t.token.bytes is not None else t.token.text
                      for t in tokens)
    got, sent = _ascii(spelled), _ascii(text)
    return got == sent or (got.endswith(sent) and len(got) - len(sent) <= 16 and got[0] == "<")
