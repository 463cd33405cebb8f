"""A remote model behind an OpenAI-compatible HTTP API (vLLM, llama.cpp's server,
llama-cpp-python's server, Ollama's ``/v1``, LM Studio, hosted APIs).

Owns: ``OpenAICompatBackend`` (model listing, the capability probe, streamed generation with
log-probabilities, every fault turned into a ``BackendError`` subclass), ``ServerCapabilities``
(what the probe found), and the log-probability readers (``parse_logprobs``, ``TokenLogprob``,
``entropy_lower_bound``) for every shape these servers send.

Threads: an instance is used by one thread at a time, the model worker (the same worker that runs
local jobs). ``stream`` is a generator run on that thread. Each HTTP request is carried out by a
short-lived daemon helper thread that only moves response lines into a queue; the worker waits on
that queue in 20 ms slices and checks ``cancel`` between them, so Stop ends a run within about
20 ms even while the server is silent (a server computing one token per second, or a
non-streaming request still waiting for its answer). On Stop the helper's socket is shut down so
the server sees the disconnect (a Stop before the server has sent its response headers leaves
the helper waiting for them in the background; what it then receives is dropped). Uses sync
httpx; no Qt.

Streaming: requests stream over server-sent events. When the probe found that log-probabilities
do not stream, or a stream's first text arrives without the log-probabilities asked for, the
request is made again without streaming (remembered for the model) and its tokens arrive all at
once at the end; ``Finished.message`` says so. A server that ignores the request altogether gives
a text-only run (below), and is not asked for log-probabilities again. Only the fields a server
accepted in the probe are sent besides the standard ones (``temperature``, ``top_p``,
``max_tokens``, ``stop``, ``seed``, non-zero ``frequency_penalty``/``presence_penalty``):
``top_k``, ``min_p`` and ``repeat_penalty``.

What a remote Step means (the server samples; we only see what it reports):

- ``p_raw = p_final = exp(logprob)`` of the chosen token as the server reports it. For
  llama.cpp, llama-cpp-python and vLLM (by default) that is the model's raw softmax, before the
  server's sampler chain; OpenAI does not say. ``kl_final_raw`` is 0.0 and ``stages`` is empty.
- ``top`` is the server's top-N, most likely first; ``TokenAlt.id`` is None unless the server
  sends token ids (llama.cpp's C++ server does). ``rank`` is the chosen token's 1-based place in
  that list, ``len(top) + 1`` when it is not in it.
- ``unseen_mass = 1 - sum(p of top)``; ``estimated`` is always True.
- ``entropy_raw = entropy_final`` is a LOWER BOUND on the entropy of the full distribution,
  estimated from the top-N: ``H_top = sum(-p log p)`` over the shown tokens, plus the unseen mass
  ``m`` times ``-log(c)``, where ``c`` bounds every unseen probability from above: the smallest
  shown p among the N requested (an unseen token cannot be more likely than a shown top-N one),
  or ``m`` itself when that is smaller. The true entropy is at least this value.
- ``position`` equals ``index`` (a count of generated tokens: the server does not tell us how
  many tokens the prompt became until the end, if at all).
- Text-only runs: a server that ignores the logprobs request still streams text. Each piece of
  text then becomes a Step with ``top == ()``, ``p_raw == p_final == 0.0`` (never NaN),
  ``rank == 0``, entropy 0.0 and ``unseen_mass == 1.0`` (nothing was seen); ``is_text_only(step)``
  tells such a step apart, and ``Finished.message`` contains ``TEXT_ONLY_NOTE``.
- Tokens split inside a UTF-8 character: when the server sends each token's ``bytes``, partial
  bytes wait for the rest (the step that completes the character shows all of it, like the local
  backend); ``piece`` shows a partial token as ``<0xE2>`` escapes. Without bytes the server's
  token text is used as it is.
- ``Finished.reason``: "length", "eos" (the server's "stop" when no stop strings were asked for),
  "stop" (its "stop" when stop strings were given: the API does not say which of the two
  happened), "cancelled", or "incomplete" (the stream was cut before the server said it was done:
  the tokens that arrived are kept and ``message`` says what happened). ``Finished.text`` is the
  text the server sent (it already leaves out a matched stop string). ``seconds`` is wall time
  from the request to the end, prompt processing and network included.

Faults: before anything was yielded, 429 (honouring ``Retry-After`` in seconds or as an HTTP
date, else exponential backoff with jitter) and 5xx (not 501/505) are retried up to
``max_retries`` times, with ``on_wait(seconds_left, reason)`` called about once a second during
each wait. Everything else raises at once, with a message for the user:
``ConnectionRefused``, ``HostNotFound``, ``TLSFailed``, ``ConnectTimeout``, ``ReadTimeout``,
``AuthenticationFailed`` (401/403), ``ModelNotFound`` / ``EndpointNotFound`` (404),
``RateLimited``, ``ServerFailed``, ``RequestRejected`` (other 4xx), ``BadResponse`` (not JSON, a
malformed chunk). A fault after some Steps were yielded raises too (those Steps stay with the
consumer); only a stream that is cut (connection closed or reset, or the body ends without the
final event) ends with ``Finished(reason="incomplete")`` instead.

The API key is sent only in the ``Authorization`` header. It is never logged, never in a repr,
an exception, a message or a returned value: server messages are scrubbed of it, 401/403 answers
are not quoted at all, and errors are raised without the httpx exception (whose request carries
the headers) chained to them.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import random
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

import httpx

from .base import (
    AuthenticationFailed,
    BackendError,
    BadResponse,
    Capabilities,
    ConnectionFailed,
    ConnectionRefused,
    ConnectTimeout,
    EndpointNotFound,
    Finished,
    GenerationError,
    HostNotFound,
    ModelNotFound,
    RateLimited,
    ReadTimeout,
    RemoteError,
    RemoteTimeout,
    RequestRejected,
    SamplerSettings,
    ServerFailed,
    ServerUnreachable,
    Step,
    TLSFailed,
    TokenAlt,
    require_prompt,
)
from .sse import LineSplitter, LineTooLong, iter_sse
from .text import Utf8Stream, clean_json, clean_text, loads_json

__all__ = [
    "OpenAICompatBackend",
    "ServerCapabilities",
    "TokenLogprob",
    "AltLogprob",
    "parse_logprobs",
    "entropy_lower_bound",
    "is_text_only",
    "TEXT_ONLY_NOTE",
    "PROBE_PROMPT",
]

log = logging.getLogger(__name__)

#: Part of ``Finished.message`` of a run whose tokens came without log-probabilities.
TEXT_ONLY_NOTE = (
    "text only: the server sent no log-probabilities, so probabilities, ranks and entropy are "
    "unknown (shown as 0)"
)
#: The prompt (and chat message) of the capability probe's tiny requests.
PROBE_PROMPT = "The capital of France is"
_OPEN_PROMPT = "Once upon a time"  # for sampling probes: many likely continuations
_POLL = 0.02  # seconds between cancel checks while waiting for the server
#: requests in flight at once for N-sample work (a server batches concurrent requests)
REMOTE_PARALLEL = 4
_QUEUE_ITEMS = 4096  # stream lines the helper thread may read ahead of the consumer
_PROBE_MAX_LINES = 2000  # a probe's stream asks for one token; more lines than this are not read
_NOT_RETRIED_5XX = {501, 505}
_MASK = "\u2022\u2022\u2022\u2022"
_BYTES_TOKEN = re.compile(r"^bytes:((?:\\x[0-9a-fA-F]{2})+)$")


# ====================================================================== value types
@dataclass(frozen=True, slots=True)
class ServerCapabilities:
    """What the capability probe found out about one model on one server.

    ``top_n_max`` is the largest number of alternatives per token the server honours (the
    larger of ``top_n_completions`` and ``top_n_chat``; 0 = no logprobs at all).
    ``seed``, ``top_k`` and ``min_p`` are True only when the server accepted the field AND a
    behavioural check passed (same seed twice gives the same text; ``top_k=1`` or
    ``min_p=1`` at temperature 2 gives the greedy text). ``accepted`` lists the non-standard
    sampler fields the server did not refuse; only those are sent with a generation.
    ``json_schema_style`` is "json_schema" (OpenAI's ``response_format``) or "json_object"
    (a ``schema`` inside ``{"type": "json_object"}``, as llama-cpp-python reads it).
    ``top_k_off`` is the ``top_k`` value the server takes for "no top-k" (0, or -1 for older vLLM).
    """

    completions: bool = False
    completions_logprobs: bool = False
    chat: bool = False
    chat_logprobs: bool = False
    top_n_max: int = 0
    stream_logprobs: bool = False
    seed: bool = False
    top_k: bool = False
    min_p: bool = False
    json_schema: bool = False
    notes: tuple[str, ...] = ()
    top_n_completions: int = 0
    top_n_chat: int = 0
    repeat_penalty: bool = False
    accepted: frozenset[str] = frozenset()
    json_schema_style: str = ""
    top_k_off: int = 0

    def to_capabilities(self) -> Capabilities:
        return Capabilities(
            full_logits=False,
            sampler_stages=False,
            step_mode=False,
            top_n_max=self.top_n_max,
            seed=self.seed,
            notes=self.notes,
            kind="remote",
            json_schema=self.json_schema,
            chat=self.chat,
            max_parallel=REMOTE_PARALLEL,
        )


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


class _Malformed(ValueError):
    """A logprobs structure of a known shape with wrong types inside."""


# ====================================================================== logprob shapes
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
        raise _Malformed(f"log-probabilities of type {type(obj).__name__}")
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


def _safe_parse(obj: Any) -> list[TokenLogprob] | None:
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
        raise _Malformed("tokens/token_logprobs are not lists")
    if tops is None:
        tops = []
    if not isinstance(tops, list):
        raise _Malformed("top_logprobs is not a list")
    out = []
    for i, tok in enumerate(tokens):
        if not isinstance(tok, str):
            raise _Malformed("a token is not a string")
        text, raw = _token_text(tok)
        lp = _lp(_num(lps[i])) if i < len(lps) else None
        top = _alts(tops[i]) if i < len(tops) else ()
        if lp is None:
            lp = _find(top, None, raw, text)
        out.append(TokenLogprob(text, lp, None, raw, top))
    return out


def _entry(e: Any) -> TokenLogprob:
    if not isinstance(e, dict):
        raise _Malformed("a token entry is not an object")
    text = _first(e, ("token", "tok_str", "content", "text"))
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise _Malformed("a token's text is not a string")
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
        raise _Malformed("top_logprobs is neither a list nor an object")
    for a in x:
        if not isinstance(a, dict):
            raise _Malformed("an alternative is not an object")
        lp = _logprob_of(a)
        if lp is None:
            continue
        text = _first(a, ("token", "tok_str", "text"))
        text = "" if text is None else text
        if not isinstance(text, str):
            raise _Malformed("an alternative's text is not a string")
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
        if _same(a.id, a.bytes, a.text, tid, raw, text):
            return a.logprob
    return None


def _same(id_a, bytes_a, text_a, id_b, bytes_b, text_b) -> bool:
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
        raise _Malformed(f"a log-probability is {type(x).__name__}, not a number")
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
        raise _Malformed("a token's bytes are not a list of byte values")
    return bytes(x)


def _token_text(text: str) -> tuple[str, bytes | None]:
    """OpenAI writes a token holding part of a UTF-8 character as ``bytes:\\xe2\\x80``."""
    m = _BYTES_TOKEN.match(text)
    if not m:
        return text, None
    raw = bytes(int(h, 16) for h in re.findall(r"\\x([0-9a-fA-F]{2})", m.group(1)))
    return raw.decode("utf-8", errors="replace"), raw


def _piece(text: str, raw: bytes | None) -> str:
    if raw is None:
        return clean_text(text)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<0x{b:02X}>" for b in raw)


def _p(logprob: float | None) -> float:
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


def is_text_only(step: Step) -> bool:
    """True for a Step of a server that sent no log-probabilities for it (see the module
    docstring): nothing is known about its probability."""
    return step.estimated and not step.top and step.unseen_mass >= 1.0 and step.p_raw == 0.0


# ====================================================================== run assembly
class _Fallback(Exception):
    """The stream carries text without logprobs although they were asked for."""


class _Cancelled(Exception):
    pass


class _Stalled(Exception):
    """No progress (no new token) within ``progress_timeout``."""


class _Run:
    """Turns what a server sends into Steps and, at the end, a Finished."""

    def __init__(self, settings: SamplerSettings, n_top: int, *, chat: bool) -> None:
        self.settings = settings
        self.n_top = n_top
        self.chat = chat
        self.index = 0
        self.utf8 = Utf8Stream()
        self.server_text: list[str] = []
        self.step_text: list[str] = []
        self.saw_logprobs = False
        self.text_only = 0
        self.missing_logprob = 0
        self.unknown_shape = False
        self.finish_reason: str | None = None
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.notes: list[str] = []
        self.may_fall_back = n_top > 0
        # our own limit: a server that ignores max_tokens is not read past it
        self.limit = max(1, int(settings.max_tokens))
        self.over_limit = False

    # ---------------------------------------------------------------- chunks
    def chunk(self, obj: Any) -> list[Step]:
        """One streamed JSON object (or a whole non-streamed answer)."""
        if not isinstance(obj, dict):
            raise _Malformed("a chunk is not a JSON object")
        self._usage(obj.get("usage"))
        choices = obj.get("choices")
        if choices is None:
            if isinstance(obj.get("content"), str):  # llama.cpp native /completion
                return self._native(obj)
            return []  # e.g. a usage-only or keep-alive object
        if not isinstance(choices, list):
            raise _Malformed("choices is not a list")
        steps: list[Step] = []
        for ch in choices:
            if not isinstance(ch, dict):
                raise _Malformed("a choice is not an object")
            if ch.get("index", 0) not in (0, None):
                continue
            steps += self._choice(ch)
        return steps

    def _choice(self, ch: dict) -> list[Step]:
        if self.chat:
            holder = ch.get("delta") if isinstance(ch.get("delta"), dict) else ch.get("message")
            text = holder.get("content") if isinstance(holder, dict) else None
        else:
            text = ch.get("text")
        if text is not None and not isinstance(text, str):
            raise _Malformed("the text of a choice is not a string")
        raw_lp = ch.get("logprobs")
        tls = parse_logprobs(raw_lp) if raw_lp is not None else None
        if tls is None and raw_lp not in (None, {}, []) and not _empty_chat_logprobs(raw_lp):
            self.unknown_shape = True
        fr = ch.get("finish_reason")
        steps = self._emit(text or "", tls)
        if fr:
            self.finish_reason = str(fr)
        return steps

    def _native(self, obj: dict) -> list[Step]:
        text = obj["content"]
        tls = parse_logprobs(obj) if ("completion_probabilities" in obj or "probs" in obj) else None
        steps = self._emit(text, tls)
        if obj.get("stop"):
            stop_type = obj.get("stop_type")
            self.finish_reason = {"limit": "length", "eos": "stop", "word": "stop"}.get(stop_type, "stop")
        self._usage({"prompt_tokens": obj.get("tokens_evaluated")} if obj.get("tokens_evaluated") else None)
        return steps

    def _emit(self, text: str, tls: list[TokenLogprob] | None) -> list[Step]:
        if text:
            self.server_text.append(text)
        room = self.limit - self.index
        if tls:
            self.saw_logprobs = True
            self.may_fall_back = False
            if len(tls) > room:
                self._past_limit()
                tls = tls[:max(room, 0)]
            return [self._token_step(t) for t in tls]
        if text:
            if self.may_fall_back and self.index == 0 and not self.saw_logprobs:
                raise _Fallback()
            self.may_fall_back = False
            if room <= 0:
                self._past_limit()
                return []
            return [self._text_step(text)]
        return []

    def _past_limit(self) -> None:
        if not self.over_limit:
            self.over_limit = True
            self.notes.append(f"the server sent more than the {self.limit} token(s) asked for (it ignores "
                              "max_tokens); Samplescope stopped reading there")

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        pt = usage.get("prompt_tokens")
        if isinstance(pt, int) and pt > 0:
            self.prompt_tokens = pt
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
            self.cached_tokens = details["cached_tokens"]

    # ---------------------------------------------------------------- steps
    def _token_step(self, t: TokenLogprob) -> Step:
        best: dict[Any, AltLogprob] = {}
        for a in t.top:  # one entry per token, the most likely value kept
            key = ("id", a.id) if a.id is not None else ("b", a.bytes) if a.bytes is not None else ("t", a.text)
            if key not in best or a.logprob > best[key].logprob:
                best[key] = a
        alts = sorted(best.values(), key=lambda a: a.logprob, reverse=True)
        ps = [_p(a.logprob) for a in alts]
        if t.logprob is None:
            self.missing_logprob += 1
        p = _p(t.logprob)
        rank = len(alts) + 1
        for i, a in enumerate(alts):
            if _same(a.id, a.bytes, a.text, t.id, t.bytes, t.text):
                rank = i + 1
                break
        if t.bytes is not None:
            visible = self.utf8.push(t.bytes)
        else:
            visible = self.utf8.push_text(t.text)
        h = entropy_lower_bound(ps, self.n_top or None)
        step = Step(
            index=self.index,
            position=self.index,
            token_id=t.id,
            token=visible,
            piece=_piece(t.text, t.bytes),
            p_raw=p,
            p_final=p,
            rank=rank,
            entropy_raw=h,
            entropy_final=h,
            kl_final_raw=0.0,
            top=tuple(TokenAlt(a.id, _piece(a.text, a.bytes), q, q) for a, q in zip(alts, ps)),
            estimated=True,
            unseen_mass=max(0.0, 1.0 - math.fsum(ps)) if ps else 1.0,
        )
        self.index += 1
        self.step_text.append(visible)
        return step

    def _text_step(self, text: str) -> Step:
        visible = self.utf8.push_text(text)
        step = Step(
            index=self.index,
            position=self.index,
            token_id=None,
            token=visible,
            piece=text,
            p_raw=0.0,
            p_final=0.0,
            rank=0,
            entropy_raw=0.0,
            entropy_final=0.0,
            kl_final_raw=0.0,
            top=(),
            estimated=True,
            unseen_mass=1.0,
        )
        self.index += 1
        self.text_only += 1
        self.step_text.append(visible)
        return step

    # ---------------------------------------------------------------- end
    def finished(self, reason: str, seconds: float, message: str = "") -> Finished:
        tail = self.utf8.flush()
        if tail:
            self.step_text.append(tail)
        use_server = self.server_text and not self.over_limit  # past the limit: only what we kept
        text = clean_text("".join(self.server_text) if use_server else "".join(self.step_text))
        notes = list(self.notes)
        if self.text_only:
            what = TEXT_ONLY_NOTE if self.text_only == self.index else (
                f"{self.text_only} of {self.index} steps came without log-probabilities ({TEXT_ONLY_NOTE})"
            )
            if self.unknown_shape:
                what += "; the server's log-probability format was not recognised"
            notes.append(what)
        if self.missing_logprob:
            notes.append(f"{self.missing_logprob} token(s) came without their own log-probability (p shown as 0)")
        if message:
            notes.insert(0, message)
        return Finished(
            reason=reason,
            text=text,
            n_tokens=self.index,
            seconds=seconds,
            prompt_tokens=self.prompt_tokens,
            reused_tokens=self.cached_tokens,
            message="; ".join(notes),
        )

    def end_reason(self) -> str:
        fr = (self.finish_reason or "").lower()
        if fr == "length" or self.over_limit:
            return "length"
        if fr and fr not in ("stop", "eos", "tool_calls", "function_call"):
            self.notes.append(f"the server ended with finish_reason '{self.finish_reason}'")
        # the API's "stop" covers both an end-of-sequence token and a matched stop string
        return "stop" if self.settings.stop else "eos"


def _empty_chat_logprobs(x: Any) -> bool:
    return isinstance(x, dict) and x.get("content") is None and set(x) <= {"content", "refusal"}


# ====================================================================== HTTP plumbing
class _TooLarge(Exception):
    """The server's answer (or one line of its stream) is larger than we read."""


class _Exchange:
    """One HTTP request carried out on a daemon helper thread. The helper puts ("head",
    response), then ("line", str)... ("end", None) for an event stream or ("body", bytes)
    otherwise, or ("error", exception), into ``queue``. ``abort`` makes it stop at once.

    Sizes are bounded: a body longer than ``max_body`` bytes or a stream line longer than
    ``max_line`` bytes ends the exchange with ("error", _TooLarge) as soon as that many bytes
    arrived, and the queue holds at most ``_QUEUE_ITEMS`` lines (the helper waits while the
    consumer catches up), so a server cannot make us hold more than that in memory."""

    def __init__(self, client: httpx.Client, method: str, path: str, body: Any, *,
                 max_body: int = 32 << 20, max_line: int = 4 << 20) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=_QUEUE_ITEMS)
        self.max_body = int(max_body)
        self.max_line = int(max_line)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._resp: httpx.Response | None = None
        self._over = False
        self._thread = threading.Thread(
            target=self._run, args=(client, method, path, body), name="samplescope-http", daemon=True
        )
        self._thread.start()

    def _put(self, item: tuple[str, Any]) -> bool:
        """Queue ``item``, waiting while the queue is full; False once the exchange is aborted."""
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, client: httpx.Client, method: str, path: str, body: Any) -> None:
        resp = None
        try:
            # every string sent is valid Unicode (a lone surrogate would not encode as UTF-8)
            request = client.build_request(method, path, json=clean_json(body) if body is not None else None)
            resp = client.send(request, stream=True)
            with self._lock:
                self._resp = resp
            if not self._put(("head", resp)):
                return
            ctype = resp.headers.get("content-type", "").lower()
            if resp.status_code < 300 and "text/event-stream" in ctype:
                splitter = LineSplitter(self.max_line)
                for chunk in resp.iter_bytes():
                    if self._stop.is_set():
                        return
                    try:
                        lines = splitter.feed(chunk)
                    except LineTooLong as exc:
                        self._put(("error", _TooLarge(str(exc))))
                        return
                    for line in lines:
                        if not self._put(("line", line)):
                            return
                for line in splitter.flush():
                    self._put(("line", line))
                self._put(("end", None))
            else:
                data = bytearray()
                for chunk in resp.iter_bytes():
                    if self._stop.is_set():
                        return
                    data += chunk
                    if len(data) > self.max_body:
                        self._put(("error", _TooLarge(f"the answer is larger than {self.max_body:,} bytes")))
                        return
                self._put(("body", bytes(data)))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            if not self._stop.is_set():
                self._put(("error", exc))
        finally:
            with self._lock:
                self._over = True
            if resp is not None:
                try:
                    resp.close()
                except Exception:  # noqa: BLE001
                    pass

    def abort(self) -> None:
        """Stop the helper: it drops what still arrives, and the socket is shut down so that a
        blocked read returns now and the server sees the disconnect."""
        self._stop.set()
        with self._lock:
            if self._over or self._resp is None:
                return
            stream = self._resp.extensions.get("network_stream")
            sock = None
            try:
                sock = stream.get_extra_info("socket") if stream is not None else None
            except Exception:  # noqa: BLE001
                sock = None
            if isinstance(sock, socket.socket):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds, fractional allowed, or an
    HTTP date; a date without a zone is read as UTC)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


class _Secret:
    """Holds the API key; its repr never shows it."""

    __slots__ = ("value",)

    def __init__(self, value: str | None) -> None:
        self.value = value or None

    def __repr__(self) -> str:
        return "<hidden>" if self.value else "<none>"


# ====================================================================== the backend
class OpenAICompatBackend:
    """A model on an OpenAI-compatible server (see the module docstring for what a remote Step
    holds and how faults are reported).

    ``base_url`` is the API root, e.g. ``http://127.0.0.1:8080/v1``; a bare ``http://host:port``
    gets ``/v1`` appended. ``transport`` replaces the network (tests: ``httpx.MockTransport``),
    ``sleep`` and ``rng`` the waiting and the jitter of retries (tests). ``send_sampler_fields``
    forces (True) or forbids (False) sending ``top_k``, ``min_p`` and ``repeat_penalty``; by
    default (None) they are sent only when ``probe`` found that the server accepts them.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        progress_timeout: float | None = None,
        max_body_bytes: int = 32 << 20,
        max_line_bytes: int = 4 << 20,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], Any] = time.sleep,
        rng: Callable[[], float] = random.random,
        send_sampler_fields: bool | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
    ) -> None:
        self._secret = _Secret(api_key)
        url = (base_url or "").strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectionFailed(
                f"'{self._scrub(base_url)}' is not a server address: enter a base URL such as "
                "http://127.0.0.1:8080/v1."
            )
        if parts.path in ("", "/"):
            url += "/v1"
        self.base_url = url
        self.model = model or None
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        # a stream that sends only keep-alive pings ends after this long without a new token
        self.progress_timeout = float(progress_timeout) if progress_timeout else self.read_timeout
        self.max_body_bytes = int(max_body_bytes)
        self.max_line_bytes = int(max_line_bytes)
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_retry_after = float(max_retry_after)
        self.send_sampler_fields = send_sampler_fields
        self._sleep = sleep
        self._rng = rng
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host = parts.hostname
        self._where = f"{parts.hostname}:{port}"
        headers = {"Accept": "application/json"}
        if self._secret.value:
            headers["Authorization"] = f"Bearer {self._secret.value}"
        self._client = httpx.Client(
            base_url=url,
            headers=headers,
            timeout=httpx.Timeout(
                connect=self.connect_timeout, read=self.read_timeout, write=self.read_timeout,
                pool=self.connect_timeout,
            ),
            transport=transport,
        )
        self._caps: dict[str | None, ServerCapabilities] = {}
        self._pause_lock = threading.Lock()
        self._pause_until = 0.0  # time.monotonic() before which no request is sent (a shared 429 back-off)
        self._pause_owner = None  # the thread whose 429 set it
        self._no_stream_logprobs: set[tuple[str | None, bool]] = set()
        self._no_logprobs: set[tuple[str | None, bool]] = set()

    # ---------------------------------------------------------------- basics
    def __repr__(self) -> str:
        return (
            f"OpenAICompatBackend(base_url={self._scrub(self.base_url)!r}, model={self.model!r}, "
            f"api_key={'set' if self._secret.value else 'none'})"
        )

    __str__ = __repr__

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "OpenAICompatBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def capabilities(self) -> Capabilities:
        """What this backend reveals, from the last ``probe`` of the current model."""
        caps = self._caps.get(self.model)
        if caps is None:
            return Capabilities(notes=("The server has not been probed yet.",), kind="remote",
                                max_parallel=REMOTE_PARALLEL)
        return caps.to_capabilities()

    def server_capabilities(self, model: str | None = None) -> ServerCapabilities | None:
        return self._caps.get(model if model is not None else self.model)

    def _scrub(self, text: str) -> str:
        """Server or transport text as we may show it: valid Unicode, the API key masked."""
        text = clean_text(text)
        key = self._secret.value
        if key and text:
            text = text.replace(key, _MASK)
        return text

    # ---------------------------------------------------------------- listing
    def list_models(self) -> list[str]:
        """The model names the server lists (``GET /v1/models``)."""
        obj = self._request_json("GET", "/models", None)
        data = obj.get("data") if isinstance(obj, dict) else None
        if data is None and isinstance(obj, dict):
            data = obj.get("models")
        if not isinstance(data, list):
            raise BadResponse(
                f"The server at {self._where} answered /models without a model list. Check that the "
                "base URL points at an OpenAI-compatible API (it usually ends in /v1)."
            )
        out = []
        for m in data:
            if isinstance(m, dict):
                name = m.get("id") or m.get("name") or m.get("model")
                if isinstance(name, str) and name:
                    out.append(clean_text(name))
            elif isinstance(m, str):
                out.append(clean_text(m))
        return out

    # ---------------------------------------------------------------- errors
    def _transport_error(self, exc: BaseException) -> BackendError:
        """An httpx transport exception as one of our errors (never chained to it)."""
        if isinstance(exc, _TooLarge):
            return self._too_large(str(exc))
        chain = _chain(exc)
        text = self._scrub(" / ".join(str(e) for e in chain if str(e)))[:300]
        low = text.lower()
        if isinstance(exc, httpx.ConnectTimeout):
            return ConnectTimeout(
                f"Could not connect to {self._where} within {self.connect_timeout:g} s. Check that the "
                "server is running and reachable from this machine, or raise the connect timeout."
            )
        if isinstance(exc, httpx.ReadTimeout):
            return ReadTimeout(
                f"The server at {self._where} sent nothing for {self.read_timeout:g} s. It may be "
                "overloaded or still loading the model; try again or raise the read timeout in the "
                "connection settings."
            )
        if isinstance(exc, httpx.TimeoutException):
            return RemoteTimeout(f"The request to {self._where} timed out ({type(exc).__name__}).")
        if any(isinstance(e, ssl.SSLError) for e in chain) or "ssl" in low or "certificate" in low or "tls" in low:
            return TLSFailed(
                f"The secure (https) connection to {self._where} failed: {text}. If the server speaks "
                "plain HTTP, use an http:// URL; if it uses a self-signed certificate, put it behind "
                "a proxy with a trusted one."
            )
        if any(isinstance(e, socket.gaierror) for e in chain) or any(
            s in low for s in ("name or service not known", "nodename nor servname", "getaddrinfo",
                               "name resolution", "no address associated", "host not found")
        ):
            return HostNotFound(
                f"The host name '{self._host}' could not be found. Check the spelling of the base URL "
                "and this machine's network connection."
            )
        if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in low:
            return ConnectionRefused(
                f"Nothing is listening at {self._where} (connection refused). Start the server, or "
                "check the host and port in the base URL."
            )
        if isinstance(exc, httpx.ConnectError):
            return ServerUnreachable(f"Could not connect to {self._where}: {text}.")
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            return ServerUnreachable(
                f"The connection to {self._where} broke before the server answered: {text}."
            )
        if isinstance(exc, httpx.UnsupportedProtocol):
            return ConnectionFailed(f"Unsupported URL for {self._where}: {text}.")
        if isinstance(exc, httpx.HTTPError):
            return RemoteError(f"The request to {self._where} failed: {type(exc).__name__}: {text}.")
        return RemoteError(f"The request to {self._where} failed: {type(exc).__name__}: {text}.")

    def _detail(self, body: bytes) -> tuple[str, Any]:
        """(the server's error message, scrubbed and short; the parsed body or None)."""
        try:
            obj = loads_json(body.decode("utf-8", errors="replace")) if body else None
        except ValueError:
            obj = None
        msg = ""
        if isinstance(obj, dict):
            err = obj.get("error", obj)
            if isinstance(err, dict):
                msg = err.get("message") or err.get("detail") or err.get("msg") or ""
            elif isinstance(err, str):
                msg = err
            if not msg and isinstance(obj.get("detail"), (str, list)):
                msg = obj["detail"] if isinstance(obj["detail"], str) else json.dumps(obj["detail"])[:300]
            if not msg and isinstance(obj.get("message"), str):
                msg = obj["message"]
        elif body:
            msg = body[:200].decode("utf-8", errors="replace")
        msg = " ".join(str(msg).split())
        if len(msg) > 300:
            msg = msg[:297] + "..."
        return self._scrub(msg), obj

    def _status_error(self, status: int, body: bytes, path: str, model: str | None, attempts: int) -> BackendError:
        msg, obj = self._detail(body)
        if status in (401, 403):
            if not self._secret.value:
                return AuthenticationFailed(
                    f"The server at {self._where} needs an API key (HTTP {status}) and none was sent. "
                    "Name the environment variable that holds it, or store it in the system keyring, "
                    "in the connection settings.", status=status,
                )
            return AuthenticationFailed(
                f"The server at {self._where} refused the API key (HTTP {status}). Check that the key "
                "is right, has not expired, and may use "
                + (f"the model '{model}'." if model else "this server."), status=status,
            )
        if status == 404:
            code = obj.get("error", {}).get("code") if isinstance(obj, dict) and isinstance(obj.get("error"), dict) else None
            if model and (code == "model_not_found" or "model" in msg.lower()):
                return ModelNotFound(
                    f"The server at {self._where} does not know the model '{model}'"
                    + (f" ({msg})" if msg else "")
                    + ". Choose one of the models it lists (Test connection shows them).", status=404,
                )
            return EndpointNotFound(
                f"The server at {self._where} has no endpoint {self.base_url}{path} (HTTP 404). Check "
                "the base URL: OpenAI-compatible servers usually answer under /v1, e.g. "
                "http://127.0.0.1:8080/v1"
                + ("; this server may not offer chat completions" if path == "/chat/completions" else "")
                + ("; this server may offer only chat completions: switch to chat mode" if path == "/completions" else "")
                + ".", status=404,
            )
        if status == 429:
            return RateLimited(
                f"The server at {self._where} is rate-limiting requests (HTTP 429) and still was after "
                f"{attempts} attempt(s)" + (f": {msg}" if msg else "") + ". Wait a little and try again.",
                status=429,
            )
        if status >= 500:
            return ServerFailed(
                f"The server at {self._where} failed (HTTP {status}"
                + (f": {msg}" if msg else "")
                + f") on {attempts} attempt(s). Check the server's log; it may be overloaded or "
                "out of memory.", status=status,
            )
        return RequestRejected(
            f"The server at {self._where} rejected the request (HTTP {status})"
            + (f": {msg}" if msg else "") + ".", status=status,
        )

    def _not_json(self, body: bytes, ctype: str, path: str) -> BadResponse:
        snippet = " ".join(body[:120].decode("utf-8", errors="replace").split())
        return BadResponse(
            f"The server at {self._where} answered {path} with something that is not JSON "
            f"({ctype or 'no content type'}: '{self._scrub(snippet)}'). Check that the base URL points "
            "at an OpenAI-compatible API (it usually ends in /v1)."
        )

    # ---------------------------------------------------------------- sending
    def _next(self, ex: _Exchange, cancel: threading.Event | None,
              deadline: float | None = None) -> tuple[str, Any]:
        """The helper's next item. With ``cancel`` or ``deadline`` (a ``time.monotonic()``
        value) it waits in ``_POLL`` slices and raises ``_Cancelled`` / ``_Stalled`` (the
        exchange aborted) when one of them comes first."""
        if cancel is None and deadline is None:
            return ex.queue.get()
        while True:
            try:
                return ex.queue.get(timeout=_POLL)
            except queue.Empty:
                if cancel is not None and cancel.is_set():
                    ex.abort()
                    raise _Cancelled() from None
                if deadline is not None and time.monotonic() > deadline:
                    ex.abort()
                    raise _Stalled() from None

    def _pause(self, seconds: float, cancel: threading.Event | None) -> None:
        if cancel is not None and self._sleep is time.sleep:
            cancel.wait(seconds)
        else:
            self._sleep(seconds)

    def _wait(self, seconds: float, reason: str, cancel, on_wait) -> None:
        """Wait ``seconds``, calling ``on_wait(seconds_left, reason)`` about once a second."""
        left = seconds
        while left > 1e-9:
            if cancel is not None and cancel.is_set():
                raise _Cancelled()
            if on_wait is not None:
                on_wait(left, reason)
                if cancel is not None and cancel.is_set():
                    raise _Cancelled()
            step = min(1.0, left)
            self._pause(step, cancel)
            left -= step
        if on_wait is not None:
            on_wait(0.0, reason)
        if cancel is not None and cancel.is_set():
            raise _Cancelled()

    def _body_cap(self, body: Any) -> int:
        """The largest answer read for ``body``: ``max_body_bytes``, or more for a request whose
        own size asks for it (many tokens with many alternatives each, about 256 bytes per
        alternative), so that a server cannot make us hold more than the request could need."""
        cap = self.max_body_bytes
        if isinstance(body, dict):
            tokens = body.get("max_tokens")
            top = body.get("top_logprobs", body.get("logprobs"))
            top = top if isinstance(top, int) and not isinstance(top, bool) else 0
            if isinstance(tokens, int) and tokens > 0:
                cap = max(cap, tokens * (top + 1) * 256)
        return cap

    def _wait_shared_pause(self, cancel, on_wait) -> None:
        """Concurrent requests (N-sample work) share one 429 back-off: while another request's
        Retry-After is running, this one waits too instead of adding to the server's load."""
        with self._pause_lock:
            left = self._pause_until - time.monotonic()
            mine = self._pause_owner == threading.get_ident()  # it waited its own Retry-After already
        if left > 0.05 and not mine:
            self._wait(left, "Rate-limited by the server (HTTP 429): waiting with the other requests", cancel,
                       on_wait)

    def _backoff(self, attempt: int) -> float:
        d = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        return d * (0.5 + 0.5 * self._rng())

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        cancel: threading.Event | None = None,
        on_wait: Callable[[float, str], None] | None = None,
        retry_5xx: bool = True,
        model: str | None = None,
    ) -> tuple[_Exchange, httpx.Response]:
        """Send with bounded retries on 429 (and 5xx); return the exchange of a 2xx answer
        (its head read) or raise."""
        attempt = 0
        while True:
            self._wait_shared_pause(cancel, on_wait)
            ex = _Exchange(self._client, method, path, body, max_body=self._body_cap(body),
                           max_line=self.max_line_bytes)
            kind, val = self._next(ex, cancel)
            if kind == "error":
                raise self._transport_error(val)
            resp: httpx.Response = val
            status = resp.status_code
            if status < 300:
                return ex, resp
            kind, payload = self._next(ex, cancel)  # the error body
            body_bytes = payload if kind == "body" else b""
            retryable = status == 429 or (retry_5xx and status >= 500 and status not in _NOT_RETRIED_5XX)
            if retryable and attempt < self.max_retries:
                delay = parse_retry_after(resp.headers.get("retry-after")) if status in (429, 503) else None
                if delay is not None and delay > self.max_retry_after:
                    e = RateLimited(
                        f"The server at {self._where} asks to wait {delay:.0f} s before the next request "
                        f"(HTTP {status}); that is longer than Samplescope waits ({self.max_retry_after:.0f} s). "
                        "Try again later.", status=status,
                    )
                    e.retry_after = delay
                    raise e
                if delay is None:
                    delay = self._backoff(attempt)
                reason = (
                    f"Rate-limited by the server (HTTP 429), attempt {attempt + 2} of {self.max_retries + 1}"
                    if status == 429 else
                    f"Server error (HTTP {status}), attempt {attempt + 2} of {self.max_retries + 1}"
                )
                log.info("%s %s: HTTP %s, waiting %.1f s", method, path, status, delay)
                if status == 429:  # every request of this backend waits: one shared back-off
                    with self._pause_lock:
                        if time.monotonic() + delay > self._pause_until:
                            self._pause_until = time.monotonic() + delay
                            self._pause_owner = threading.get_ident()
                self._wait(delay, reason, cancel, on_wait)
                attempt += 1
                continue
            raise self._status_error(status, body_bytes, path, model, attempt + 1)

    def _request_json(self, method: str, path: str, body: Any, *, retry_5xx: bool = True,
                      model: str | None = None, cancel=None, on_wait=None) -> Any:
        ex, resp = self._send(method, path, body, retry_5xx=retry_5xx, model=model, cancel=cancel, on_wait=on_wait)
        try:
            kind, payload = self._next(ex, cancel)
            if kind == "error":
                err = self._transport_error(payload)
                raise err
            if kind == "line":  # an event stream where JSON was expected
                raise self._not_json(b"data: ...", resp.headers.get("content-type", ""), path)
            obj, ok = _loads(payload)
            if not ok:
                raise self._not_json(payload, resp.headers.get("content-type", ""), path)
            return obj
        finally:
            ex.abort()

    # ---------------------------------------------------------------- probe
    def _try(self, path: str, body: dict, model: str | None) -> tuple[int, Any, str]:
        """A probe request: (HTTP status, parsed JSON or None, error text). Only faults that make
        probing pointless raise (unreachable, timeouts, 401/403, unknown model, rate limits that
        outlast the retries)."""
        try:
            obj = self._request_json("POST", path, body, retry_5xx=False, model=model)
            return 200, obj, ""
        except (AuthenticationFailed, ModelNotFound, ServerUnreachable, RemoteTimeout, RateLimited):
            raise
        except RemoteError as exc:
            return exc.status or 0, None, str(exc)

    def _try_stream(self, path: str, body: dict, model: str | None) -> tuple[int, list, str]:
        try:
            ex, resp = self._send("POST", path, body, retry_5xx=False, model=model)
        except (AuthenticationFailed, ModelNotFound, ServerUnreachable, RemoteTimeout, RateLimited):
            raise
        except RemoteError as exc:
            return exc.status or 0, [], str(exc)
        objs: list = []
        deadline = time.monotonic() + self.progress_timeout  # a probe asks for 1 token: bounded time
        try:
            lines: list[str] = []
            while True:
                try:
                    kind, val = self._next(ex, None, deadline)
                except _Stalled:
                    return 0, [], str(self._stalled_error())
                if kind == "line":
                    lines.append(val)
                    if len(lines) > _PROBE_MAX_LINES:  # a 1-token probe answered by an endless stream
                        break
                elif kind == "body":
                    obj, ok = _loads(val)
                    if ok:
                        objs.append(obj)
                    else:
                        lines += val.decode("utf-8", errors="replace").splitlines()
                    break
                elif kind == "end":
                    break
                else:
                    return 0, [], str(self._transport_error(val))
            for ev in iter_sse(lines, flush_incomplete=True):
                if ev.is_done:
                    break
                obj, ok = _loads(ev.data)
                if ok:
                    objs.append(obj)
            return 200, objs, ""
        finally:
            ex.abort()

    def probe(self, model: str | None = None) -> ServerCapabilities:
        """Find out what the server can do for ``model`` (default: the backend's model) with a
        dozen tiny requests (1 to 8 tokens each). Also makes ``model`` the current model."""
        model = model or self.model
        self.model = model or None
        notes: list[str] = []
        base = {"model": model} if model else {}

        def cmpl(**kw) -> dict:
            return {**base, "prompt": PROBE_PROMPT, "max_tokens": 1, "temperature": 0, **kw}

        def chat(**kw) -> dict:
            return {**base, "messages": [{"role": "user", "content": PROBE_PROMPT}], "max_tokens": 2,
                    "temperature": 0, **kw}

        # 1. logprobs and the largest top-N, for completions then chat
        c_ok, c_lp, c_n = self._probe_logprobs("/completions", lambda n: cmpl(logprobs=n), model, notes, "completions")
        h_ok, h_lp, h_n = self._probe_logprobs(
            "/chat/completions", lambda n: chat(logprobs=True, top_logprobs=n), model, notes, "chat"
        )
        if c_ok and not h_ok:
            notes.append("no chat endpoint (or no chat template): completion mode only")
        # 2. do logprobs stream?
        stream_lp = False
        if c_lp or h_lp:
            path, body = ("/completions", cmpl(logprobs=max(1, min(5, c_n)), stream=True)) if c_lp else (
                "/chat/completions", chat(logprobs=True, top_logprobs=max(1, min(5, h_n)), stream=True))
            status, objs, err = self._try_stream(path, body, model)
            stream_lp = any(_safe_parse(o) for o in objs if isinstance(o, dict))
            if not stream_lp:
                notes.append("log-probabilities do not stream: runs arrive all at once at the end"
                             + (f" ({err})" if err else ""))
        # 3. sampler fields, on whichever endpoint works (completions preferred)
        seed = top_k = min_p = repeat_penalty = False
        top_k_off = 0
        accepted: set[str] = set()
        if c_ok or h_ok:
            path = "/completions" if c_ok else "/chat/completions"

            def req(max_tokens: int, **kw) -> dict:
                b = cmpl(**kw) if c_ok else chat(**kw)
                b["max_tokens"] = max_tokens
                if c_ok:
                    b["prompt"] = _OPEN_PROMPT
                else:
                    b["messages"] = [{"role": "user", "content": _OPEN_PROMPT}]
                return b

            def text_of(obj: Any) -> str | None:
                try:
                    ch = obj["choices"][0]
                    return ch["text"] if c_ok else (ch["message"].get("content") or "")
                except (KeyError, IndexError, TypeError, AttributeError):
                    return None

            g_status, g_obj, _ = self._try(path, req(4), model)
            greedy = text_of(g_obj) if g_status == 200 else None
            # seed: accepted, and the same seed twice gives the same sample
            s1, o1, e1 = self._try(path, req(6, temperature=1.0, top_p=1.0, seed=1234), model)
            if s1 == 200:
                accepted.add("seed")
                s2, o2, _ = self._try(path, req(6, temperature=1.0, top_p=1.0, seed=1234), model)
                seed = s2 == 200 and text_of(o1) is not None and text_of(o1) == text_of(o2)
                if not seed:
                    notes.append("seed is accepted but the same seed gave two different samples")
            else:
                notes.append(f"seed refused ({e1})")
            for name, kw in (("top_k", {"top_k": 1}), ("min_p", {"min_p": 1.0})):
                st, ob, er = self._try(path, req(4, temperature=2.0, top_p=1.0, seed=7, **kw), model)
                if st != 200:
                    notes.append(f"{name} refused")
                    continue
                accepted.add(name)
                if name == "top_k" and self._try(path, req(1, top_k=0), model)[0] != 200:
                    if self._try(path, req(1, top_k=-1), model)[0] == 200:
                        top_k_off = -1
                ok = greedy is not None and text_of(ob) == greedy
                if name == "top_k":
                    top_k = ok
                else:
                    min_p = ok
                if not ok:
                    notes.append(f"{name} is accepted but has no visible effect (ignored?)")
            st, _, _ = self._try(path, req(1, repeat_penalty=1.0), model)
            if st == 200:
                accepted.add("repeat_penalty")
                repeat_penalty = True
        # 4. JSON schema response format
        json_schema, style = self._probe_json_schema(model, base, h_ok, c_ok)
        if not json_schema:
            notes.append("no JSON-schema response format")
        top_n_max = max(c_n if c_lp else 0, h_n if h_lp else 0)
        if not (c_lp or h_lp) and (c_ok or h_ok):
            notes.append("the server returns no log-probabilities: runs are text only")
        caps = ServerCapabilities(
            completions=c_ok, completions_logprobs=c_lp, chat=h_ok, chat_logprobs=h_lp,
            top_n_max=top_n_max, stream_logprobs=stream_lp, seed=seed, top_k=top_k, min_p=min_p,
            json_schema=json_schema, notes=tuple(notes), top_n_completions=c_n if c_lp else 0,
            top_n_chat=h_n if h_lp else 0, repeat_penalty=repeat_penalty,
            accepted=frozenset(accepted), json_schema_style=style, top_k_off=top_k_off,
        )
        self._caps[self.model] = caps
        return caps

    def _probe_logprobs(self, path, make, model, notes, label) -> tuple[bool, bool, int]:
        """(endpoint works, logprobs come back, largest top-N honoured)."""
        errors = []
        for n in (20, 5, 1):
            status, obj, err = self._try(path, make(n), model)
            if status == 404:
                return False, False, 0
            if status != 200:
                errors.append(err)
                continue
            tls = _safe_parse(obj)
            if tls is None:
                notes.append(f"{label}: no log-probabilities in the answer (the server ignores the request)")
                return True, False, 0
            if not tls:
                notes.append(f"{label}: the probe produced no token, top-N not measured")
                return True, True, n
            count = max(len({(a.id, a.text, a.bytes) for a in t.top}) for t in tls)
            # llama-cpp-python keys alternatives by their text, so two tokens with the same text
            # merge: a count within 10 % of n still means n was honoured
            if count >= n or count >= math.ceil(0.9 * n):
                return True, True, n
            if count > 0:
                notes.append(f"{label}: asked for {n} alternatives, got {count}")
                return True, True, count
            return True, True, 0
        # every logprobs request failed: does the endpoint work without them?
        status, obj, err = self._try(path, {k: v for k, v in make(1).items() if k not in ("logprobs", "top_logprobs")}, model)
        if status == 200:
            notes.append(f"{label}: asking for log-probabilities fails ({errors[-1] if errors else 'error'}); "
                         "llama-cpp-python needs --logits_all true")
            return True, False, 0
        return False, False, 0

    def _probe_json_schema(self, model, base, chat_ok, cmpl_ok) -> tuple[bool, str]:
        if not (chat_ok or cmpl_ok):
            return False, ""
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
        styles = (
            ("json_schema", {"type": "json_schema", "json_schema": {"name": "probe", "schema": schema, "strict": True}}),
            ("json_object", {"type": "json_object", "schema": schema}),
        )
        for style, fmt in styles:
            if chat_ok:
                path, body = "/chat/completions", {**base, "messages": [{"role": "user", "content": "Give a JSON object."}]}
            else:
                path, body = "/completions", {**base, "prompt": "A JSON object:"}
            body.update(max_tokens=12, temperature=0, response_format=fmt)
            status, obj, _ = self._try(path, body, model)
            if status != 200:
                continue
            try:
                ch = obj["choices"][0]
                text = ch["message"]["content"] if chat_ok else ch["text"]
            except (KeyError, IndexError, TypeError):
                continue
            if isinstance(text, str) and text.lstrip().startswith("{"):
                return True, style
        return False, ""

    # ---------------------------------------------------------------- generation
    def _resolve_model(self) -> str | None:
        if self.model:
            return self.model
        try:
            models = self.list_models()
        except (EndpointNotFound, BadResponse):
            return None
        if len(models) == 1:
            self.model = models[0]
            return self.model
        if not models:
            return None
        raise RequestRejected(
            f"The server at {self._where} offers {len(models)} models ({', '.join(models[:8])}"
            + (", ..." if len(models) > 8 else "") + "): choose one."
        )

    def _sends(self, name: str, caps: ServerCapabilities | None) -> bool:
        if name == "seed":
            return caps is None or "seed" in caps.accepted
        if self.send_sampler_fields is not None:
            return self.send_sampler_fields
        return caps is not None and name in caps.accepted

    def _top_n(self, settings: SamplerSettings, caps: ServerCapabilities | None, chat: bool, model) -> int:
        if (model, chat) in self._no_logprobs:
            return 0
        if caps is None:
            return min(settings.top_n, 20)
        ok, cap = (caps.chat_logprobs, caps.top_n_chat) if chat else (caps.completions_logprobs, caps.top_n_completions)
        if not ok:
            return 0
        return max(1, min(settings.top_n, cap)) if cap > 0 else 1

    def _body(self, prompt, messages, s: SamplerSettings, model, n: int, stream: bool, caps) -> dict:
        body: dict[str, Any] = {}
        if model:
            body["model"] = model
        if messages is not None:
            body["messages"] = messages
            if n > 0:
                body["logprobs"] = True
                body["top_logprobs"] = n
        else:
            body["prompt"] = prompt
            if n > 0:
                body["logprobs"] = n
        body["max_tokens"] = s.max_tokens
        body["temperature"] = s.temperature
        body["top_p"] = s.top_p
        if s.stop:
            body["stop"] = list(s.stop)
        if s.frequency_penalty:
            body["frequency_penalty"] = s.frequency_penalty
        if s.presence_penalty:
            body["presence_penalty"] = s.presence_penalty
        if self._sends("seed", caps):
            body["seed"] = s.seed
        if self._sends("top_k", caps):
            # "off" is 0 for llama.cpp, llama-cpp-python (which refuses -1) and recent vLLM; older
            # vLLM wants -1 (the probe finds out which)
            body["top_k"] = s.top_k if s.top_k > 0 else (caps.top_k_off if caps is not None else 0)
        if self._sends("min_p", caps):
            body["min_p"] = s.min_p
        if self._sends("repeat_penalty", caps):
            body["repeat_penalty"] = s.repeat_penalty
        body["stream"] = stream
        return body

    def stream(
        self,
        prompt: str | None,
        settings: SamplerSettings,
        *,
        messages: list[dict] | None = None,
        cancel: threading.Event | None = None,
        on_wait: Callable[[float, str], None] | None = None,
    ) -> Iterator[Step | Finished]:
        """Generate on the server: yield one ``Step`` per token as it arrives, then one
        ``Finished``. Completion mode sends ``prompt`` raw to ``/v1/completions``; chat mode
        (``messages`` given: ``[{"role": ..., "content": ...}]``) uses ``/v1/chat/completions``.
        ``cancel`` stops the run within about 20 ms (``Finished(reason="cancelled")``, the
        partial output kept); ``on_wait(seconds_left, reason)`` is called about once a second
        while a 429/5xx retry waits. Raises ``BackendError`` subclasses (module docstring)."""
        settings.validate()
        chat = messages is not None
        if chat:
            if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            ):
                raise GenerationError("Chat mode needs at least one message with a role and a text.")
        else:
            require_prompt(prompt)
        t0 = time.perf_counter()
        model = self._resolve_model()
        caps = self._caps.get(model)
        key = (model, chat)
        n = self._top_n(settings, caps, chat, model)
        # without logprobs to ask for, always stream; with them, stream unless they do not stream
        streaming = n == 0 or (key not in self._no_stream_logprobs and not (caps is not None and not caps.stream_logprobs))
        path = "/chat/completions" if chat else "/completions"
        run = _Run(settings, n, chat=chat)
        try:
            while True:
                body = self._body(prompt, messages, settings, model, n, streaming, caps)
                run.n_top = n
                run.may_fall_back = n > 0 and streaming
                try:
                    outcome = yield from self._consume(path, body, run, cancel, on_wait, model)
                except _Fallback:
                    # text arrived without the logprobs we asked for: ask again without streaming
                    self._no_stream_logprobs.add(key)
                    streaming = False
                    run = _Run(settings, n, chat=chat)
                    continue
                except RequestRejected as exc:
                    if run.index == 0 and caps is None and n > 1 and "logprob" in str(exc).lower():
                        n = 5 if n > 5 else 1  # an unprobed server with a smaller top-N cap
                        run = _Run(settings, n, chat=chat)
                        continue
                    raise
                break
        except _Cancelled:
            yield run.finished("cancelled", time.perf_counter() - t0, "Stopped by the user; the partial output is kept.")
            return
        if n > 0 and not run.saw_logprobs and run.index > 0:
            self._no_logprobs.add(key)  # do not ask (and fall back) again next time
        if not streaming and run.index:
            run.notes.append("the server does not stream log-probabilities here, so the tokens arrived "
                             "all at once at the end")
        if outcome is not None:  # the stream was cut
            yield run.finished("incomplete", time.perf_counter() - t0, outcome)
            return
        reason = run.end_reason()
        yield run.finished(reason, time.perf_counter() - t0)

    def _lines(self, ex: _Exchange, cancel, run: _Run) -> Iterator[str]:
        """The stream's lines as they arrive. Progress is a new token: keep-alive comments
        (``: ping``) and events without a token do not count, so a stream that sends nothing
        else for ``progress_timeout`` seconds raises ``_Stalled`` (httpx's read timeout alone
        would wait forever, since every ping resets it)."""
        last_index, last_t = run.index, time.monotonic()
        while True:
            now = time.monotonic()
            if run.index != last_index:
                last_index, last_t = run.index, now
            deadline = last_t + self.progress_timeout
            if now > deadline:
                ex.abort()
                raise _Stalled()
            kind, val = self._next(ex, cancel, deadline)
            if kind == "line":
                yield val
            elif kind == "end":
                return
            elif kind == "body":
                yield from val.decode("utf-8", errors="replace").splitlines()
                return
            elif isinstance(val, (httpx.HTTPError, _TooLarge)):
                raise val
            else:
                raise _StreamCut(f"{type(val).__name__}: {self._scrub(str(val))}")

    def _consume(self, path, body, run: _Run, cancel, on_wait, model) -> Iterator[Step]:
        """Run one request into ``run`` (an event stream or one JSON answer, whatever the server
        sends back); return None when the server finished, or a message when it was cut."""
        ex, resp = self._send("POST", path, body, cancel=cancel, on_wait=on_wait, model=model)
        ctype = resp.headers.get("content-type", "").lower()
        try:
            if "text/event-stream" in ctype:
                return (yield from self._sse(self._lines(ex, cancel, run), run, path))
            kind, payload = self._next(ex, cancel)
            if kind == "error":
                if _is_cut(payload):
                    return self._cut_message(run, self._scrub(str(payload)) or type(payload).__name__)
                raise self._transport_error(payload)
            if payload.lstrip().startswith((b"data:", b":")):  # an event stream without its content type
                return (yield from self._sse(payload.decode("utf-8", errors="replace").splitlines(), run, path))
            # one JSON answer: asked for (no streaming), or a server that ignored stream=true
            obj, ok = _loads(payload)
            if not ok:
                raise self._not_json(payload, ctype, path)
            run.may_fall_back = False
            for st in self._chunk(run, obj):
                yield st
            return None
        finally:
            ex.abort()

    def _sse(self, lines: Iterable[str], run: _Run, path: str) -> Iterator[Step]:
        done = False
        cut: str | None = None
        failure: BackendError | None = None
        try:
            for ev in iter_sse(lines, flush_incomplete=True):
                if ev.is_done:
                    done = True
                    break
                for obj in self._decode(ev, path):
                    for st in self._chunk(run, obj):
                        yield st
                if run.over_limit:  # the server ignores max_tokens: read no further
                    done = True
                    break
        except _StreamCut as exc:
            cut = str(exc)
        except _Stalled:
            if run.index:
                cut = f"no new token for {self.progress_timeout:g} s"
            else:
                failure = self._stalled_error()
        except _TooLarge as exc:
            failure = self._mid_stream(self._too_large(str(exc)), run)
        except httpx.HTTPError as exc:
            if _is_cut(exc):
                cut = self._scrub(str(exc)) or type(exc).__name__
            else:
                failure = self._mid_stream(self._transport_error(exc), run)
        # raised here, outside the handler, so that no httpx exception (whose request holds the
        # headers) is chained to what the caller sees
        if failure is not None:
            raise failure
        if cut is not None:
            return self._cut_message(run, cut)
        if not done and not run.finish_reason:
            return self._cut_message(run, "the stream ended before the server said it was done")
        return None

    def _stalled_error(self) -> ReadTimeout:
        return ReadTimeout(
            f"The server at {self._where} kept the connection open but sent no token for "
            f"{self.progress_timeout:g} s (only keep-alive messages). It may be stuck or overloaded; "
            "try again, or raise the read timeout in the connection settings."
        )

    def _too_large(self, detail: str) -> BadResponse:
        return BadResponse(
            f"The server at {self._where} sent more than Samplescope reads ({detail}). It may not be "
            "an OpenAI-compatible server, or it ignored the request's limits."
        )

    def _mid_stream(self, err: BackendError, run: _Run) -> BackendError:
        if run.index:
            err.args = (f"{err.args[0]} ({run.index} token(s) had arrived and are kept.)",)
        return err

    def _cut_message(self, run: _Run, detail: str) -> str:
        return (
            f"The connection to {self._where} was cut after {run.index} token(s) ({detail}); "
            "the tokens that arrived are kept and the run is marked incomplete."
        )

    def _decode(self, ev, path) -> list[Any]:
        obj, ok = _loads(ev.data)
        if ok:
            return [obj]
        if not ev.complete:
            raise _StreamCut("the last event arrived only in part")
        if "\n" in ev.data:  # a server that omits the blank line between events
            parts = [_loads(part) for part in ev.data.split("\n") if part.strip()]
            if all(ok for _, ok in parts):
                return [o for o, _ in parts]
        snippet = self._scrub(" ".join(ev.data[:120].split()))
        raise BadResponse(
            f"The server at {self._where} sent a malformed event on {path} (not JSON: '{snippet}'). "
            "It may not be an OpenAI-compatible server, or a proxy in between altered the stream."
        )

    def _chunk(self, run: _Run, obj: Any) -> list[Step]:
        if isinstance(obj, dict) and obj.get("error") is not None:
            err = obj["error"]
            msg = err.get("message") if isinstance(err, dict) else str(err)
            code = err.get("code") if isinstance(err, dict) else None
            msg = self._scrub(" ".join(str(msg or "").split()))[:300]
            raise ServerFailed(
                f"The server at {self._where} reported an error in the middle of the stream: {msg or 'no detail'}"
                + (f" ({run.index} token(s) had arrived and are kept.)" if run.index else "."),
                status=code if isinstance(code, int) else None,
            )
        problem = None
        try:
            return run.chunk(obj)
        except _Malformed as exc:
            problem = str(exc)
        raise BadResponse(
            f"The server at {self._where} sent a chunk this backend cannot read ({problem})."
            + (f" {run.index} token(s) had arrived and are kept." if run.index else "")
        )


def _loads(data: str | bytes) -> tuple[Any, bool]:
    try:
        return loads_json(data), True
    except ValueError:
        return None, False


def _is_cut(exc: BaseException) -> bool:
    """A connection closed or reset in the middle of an answer (not a timeout)."""
    return isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.CloseError))


class _StreamCut(Exception):
    pass
