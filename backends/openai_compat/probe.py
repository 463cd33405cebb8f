"""The capability probe: what a server can do for one model, found with a dozen tiny requests.

Owns: ``probe_server`` (the probe itself, 1 to 8 tokens per request: which endpoints work,
whether log-probabilities come back and the largest top-N each endpoint honours, whether they
stream, which sampler fields are accepted and which have a visible effect (the same seed twice,
``top_k=1`` / ``min_p=1`` against the greedy text), the prompt's own log-probabilities through
``echo``, the JSON-schema response format) and
``PROBE_PROMPT``. What it found is a ``capabilities.ServerCapabilities``.

Threads: ``probe_server`` runs on the caller's thread (the model worker, or the CLI's main
thread), its requests on ``Exchange`` helper threads through the backend's ``Sender``. No Qt.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from ..base import (
    AuthenticationFailed,
    ModelNotFound,
    RateLimited,
    RemoteError,
    RemoteTimeout,
    ServerUnreachable,
)
from ..sse import iter_sse
from .capabilities import ServerCapabilities
from .exchange import Kind, Stalled
from .echo import echo_request, echoes, read_echo
from .logprobs import Malformed, safe_parse
from .retry import Sender, loads

__all__ = ["probe_server", "PROBE_PROMPT"]

#: The prompt (and chat message) of the capability probe's tiny requests.
PROBE_PROMPT = "The capital of France is"
_OPEN_PROMPT = "Once upon a time"  # for sampling probes: many likely continuations
_PROBE_MAX_LINES = 2000  # a probe's stream asks for one token; more lines than this are not read
#: the faults that make probing pointless: they are raised, every other one is a finding
_FATAL = (AuthenticationFailed, ModelNotFound, ServerUnreachable, RemoteTimeout, RateLimited)


def probe_server(sender: Sender, model: str | None, *, progress_timeout: float) -> ServerCapabilities:
    """Find out what the server behind ``sender`` can do for ``model`` with a dozen tiny
    requests (1 to 8 tokens each). A streamed probe that sends no token for
    ``progress_timeout`` seconds counts as "does not stream"."""
    return _Probe(sender, progress_timeout).run(model)


class _Probe:
    """One probe's requests: each finding is noted, only faults that make probing pointless
    raise."""

    def __init__(self, sender: Sender, progress_timeout: float) -> None:
        self.sender = sender
        self.progress_timeout = progress_timeout

    def _try(self, path: str, body: dict, model: str | None) -> tuple[int, Any, str]:
        """A probe request: (HTTP status, parsed JSON or None, error text). Only faults that make
        probing pointless raise (unreachable, timeouts, 401/403, unknown model, rate limits that
        outlast the retries)."""
        try:
            obj = self.sender.request_json("POST", path, body, retry_5xx=False, model=model)
            return 200, obj, ""
        except _FATAL:
            raise
        except RemoteError as exc:
            return exc.status or 0, None, str(exc)

    def _try_stream(self, path: str, body: dict, model: str | None) -> tuple[int, list, str]:
        """A streamed probe request: (HTTP status, the parsed events, error text)."""
        try:
            ex, resp = self.sender.send("POST", path, body, retry_5xx=False, model=model)
        except _FATAL:
            raise
        except RemoteError as exc:
            return exc.status or 0, [], str(exc)
        objs: list = []
        deadline = time.monotonic() + self.progress_timeout  # a probe asks for 1 token: bounded time
        try:
            lines: list[str] = []
            while True:
                try:
                    msg = ex.next(None, deadline)
                except Stalled:
                    return 0, [], str(self.sender.faults.stalled())
                if msg.kind is Kind.LINE:
                    lines.append(msg.value)
                    if len(lines) > _PROBE_MAX_LINES:  # a 1-token probe answered by an endless stream
                        break
                elif msg.kind is Kind.BODY:
                    obj, ok = loads(msg.value)
                    if ok:
                        objs.append(obj)
                    else:
                        lines += msg.value.decode("utf-8", errors="replace").splitlines()
                    break
                elif msg.kind is Kind.END:
                    break
                else:
                    return 0, [], str(self.sender.faults.transport_error(msg.value))
            for ev in iter_sse(lines, flush_incomplete=True):
                if ev.is_done:
                    break
                obj, ok = loads(ev.data)
                if ok:
                    objs.append(obj)
            return 200, objs, ""
        finally:
            ex.abort()

    def run(self, model: str | None) -> ServerCapabilities:
        """Every probe request for ``model``, and what they found."""
        notes: list[str] = []
        base = {"model": model} if model else {}

        def cmpl(**kw: Any) -> dict:
            return {**base, "prompt": PROBE_PROMPT, "max_tokens": 1, "temperature": 0, **kw}

        def chat(**kw: Any) -> dict:
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
            stream_lp = any(safe_parse(o) for o in objs if isinstance(o, dict))
            if not stream_lp:
                notes.append("log-probabilities do not stream: runs arrive all at once at the end"
                             + (f" ({err})" if err else ""))
        # 3. sampler fields, on whichever endpoint works (completions preferred)
        seed = top_k = min_p = repeat_penalty = False
        top_k_off = 0
        accepted: set[str] = set()
        if c_ok or h_ok:
            path = "/completions" if c_ok else "/chat/completions"

            def req(max_tokens: int, **kw: Any) -> dict:
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
        # 4. the prompt's own log-probabilities (echo), for the prompt X-ray
        echo = False
        if c_lp:
            st, ob, er = self._try("/completions", echo_request(PROBE_PROMPT, model, 1), model)
            try:
                echoed = read_echo(ob, PROBE_PROMPT) if st == 200 else None
            except Malformed:
                echoed = None
            # the prompt's tokens came back (more than the one generated) with values after the first
            echo = (echoed is not None and len(echoed) >= 2 and echoes(echoed, PROBE_PROMPT)
                    and any(e.token.logprob is not None for e in echoed[1:]))
            if not echo:
                notes.append("no log-probabilities for an echoed prompt: the prompt X-ray needs a local model"
                             + (f" ({er})" if st != 200 and er else ""))
        # 5. JSON schema response format
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
            accepted=frozenset(accepted), json_schema_style=style, top_k_off=top_k_off, echo_logprobs=echo,
        )
        return caps

    def _probe_logprobs(self, path: str, make: Callable[[int], dict], model: str | None, notes: list[str],
                        label: str) -> tuple[bool, bool, int]:
        """(endpoint works, logprobs come back, largest top-N honoured)."""
        errors = []
        for n in (20, 5, 1):
            status, obj, err = self._try(path, make(n), model)
            if status == 404:
                return False, False, 0
            if status != 200:
                errors.append(err)
                continue
            tls = safe_parse(obj)
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

    def _probe_json_schema(self, model: str | None, base: dict, chat_ok: bool,
                           cmpl_ok: bool) -> tuple[bool, str]:
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

