"""Reading one generation answer: an event stream, or one JSON answer, into a ``Run``.

Owns: ``AnswerReader`` (``consume``: send one generation request and feed what comes back to a
``steps.Run``, yielding its Steps as they arrive; an event stream is read line by line with a
progress deadline (keep-alive pings are not progress), a JSON answer at once; the end of the
answer is told apart from a cut: the return value is None when the server finished, else the
"incomplete" message). Errors the server reports inside the stream, chunks that cannot be read
and malformed events become ``ServerFailed`` / ``BadResponse``.

Threads: runs on the thread that iterates ``OpenAICompatBackend.stream`` (the model worker, or
a concurrent job's helper), waiting on the ``Exchange`` in 20 ms slices so ``cancel`` is honoured
while the server is silent. No Qt.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Generator, Iterable, Iterator

import httpx

from ..base import BackendError, BadResponse, ServerFailed, Step
from ..sse import SSEEvent, iter_sse
from .exchange import Exchange, Kind, Stalled, TooLarge
from .faults import StreamCut, is_cut
from .logprobs import Malformed
from .retry import OnWait, Sender, loads
from .steps import Run

__all__ = ["AnswerReader"]


class AnswerReader:
    """Reads generation answers through ``sender``; a stream with no new token for
    ``progress_timeout`` seconds is stalled."""

    def __init__(self, sender: Sender, progress_timeout: float) -> None:
        self.sender = sender
        self.faults = sender.faults
        self.progress_timeout = progress_timeout

    def _lines(self, ex: Exchange, cancel: threading.Event | None, run: Run) -> Iterator[str]:
        """The stream's lines as they arrive. Progress is a new token: keep-alive comments
        (``: ping``) and events without a token do not count, so a stream that sends nothing
        else for ``progress_timeout`` seconds raises ``Stalled`` (httpx's read timeout alone
        would wait forever, since every ping resets it)."""
        last_index, last_t = run.index, time.monotonic()
        while True:
            now = time.monotonic()
            if run.index != last_index:
                last_index, last_t = run.index, now
            deadline = last_t + self.progress_timeout
            if now > deadline:
                ex.abort()
                raise Stalled()
            msg = ex.next(cancel, deadline)
            val = msg.value
            if msg.kind is Kind.LINE:
                yield val
            elif msg.kind is Kind.END:
                return
            elif msg.kind is Kind.BODY:
                yield from val.decode("utf-8", errors="replace").splitlines()
                return
            elif isinstance(val, (httpx.HTTPError, TooLarge)):
                raise val
            else:
                raise StreamCut(f"{type(val).__name__}: {self.faults.scrub(str(val))}")

    def consume(self, path: str, body: dict[str, Any], run: Run, cancel: threading.Event | None,
                on_wait: OnWait | None, model: str | None) -> Generator[Step, None, str | None]:
        """Run one request into ``run`` (an event stream or one JSON answer, whatever the server
        sends back), yielding its Steps; return None when the server finished, or a message
        when it was cut."""
        ex, resp = self.sender.send("POST", path, body, cancel=cancel, on_wait=on_wait, model=model)
        ctype = resp.headers.get("content-type", "").lower()
        try:
            if "text/event-stream" in ctype:
                return (yield from self._sse(self._lines(ex, cancel, run), run, path))
            msg = ex.next(cancel)
            payload = msg.value
            if msg.kind is Kind.ERROR:
                if is_cut(payload):
                    return self.faults.cut_message(run.index, self.faults.scrub(str(payload)) or type(payload).__name__)
                raise self.faults.transport_error(payload)
            if payload.lstrip().startswith((b"data:", b":")):  # an event stream without its content type
                return (yield from self._sse(payload.decode("utf-8", errors="replace").splitlines(), run, path))
            # one JSON answer: asked for (no streaming), or a server that ignored stream=true
            obj, ok = loads(payload)
            if not ok:
                raise self.faults.not_json(payload, ctype, path)
            run.may_fall_back = False
            for st in self._chunk(run, obj):
                yield st
            return None
        finally:
            ex.abort()

    def _sse(self, lines: Iterable[str], run: Run, path: str) -> Generator[Step, None, str | None]:
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
        except StreamCut as exc:
            cut = str(exc)
        except Stalled:
            if run.index:
                cut = f"no new token for {self.progress_timeout:g} s"
            else:
                failure = self.faults.stalled()
        except TooLarge as exc:
            failure = self.faults.mid_stream(self.faults.too_large(str(exc)), run.index)
        except httpx.HTTPError as exc:
            if is_cut(exc):
                cut = self.faults.scrub(str(exc)) or type(exc).__name__
            else:
                failure = self.faults.mid_stream(self.faults.transport_error(exc), run.index)
        # raised here, outside the handler, so that no httpx exception (whose request holds the
        # headers) is chained to what the caller sees
        if failure is not None:
            raise failure
        if cut is not None:
            return self.faults.cut_message(run.index, cut)
        if not done and not run.finish_reason:
            return self.faults.cut_message(run.index, "the stream ended before the server said it was done")
        return None

    def _decode(self, ev: SSEEvent, path: str) -> list[Any]:
        obj, ok = loads(ev.data)
        if ok:
            return [obj]
        if not ev.complete:
            raise StreamCut("the last event arrived only in part")
        if "\n" in ev.data:  # a server that omits the blank line between events
            parts = [loads(part) for part in ev.data.split("\n") if part.strip()]
            if all(ok for _, ok in parts):
                return [o for o, _ in parts]
        snippet = self.faults.scrub(" ".join(ev.data[:120].split()))
        raise BadResponse(
            f"The server at {self.faults.where} sent a malformed event on {path} (not JSON: '{snippet}'). "
            "It may not be an OpenAI-compatible server, or a proxy in between altered the stream."
        )

    def _chunk(self, run: Run, obj: Any) -> list[Step]:
        if isinstance(obj, dict) and obj.get("error") is not None:
            err = obj["error"]
            msg = err.get("message") if isinstance(err, dict) else str(err)
            code = err.get("code") if isinstance(err, dict) else None
            msg = self.faults.scrub(" ".join(str(msg or "").split()))[:300]
            raise ServerFailed(
                f"The server at {self.faults.where} reported an error in the middle of the stream: {msg or 'no detail'}"
                + (f" ({run.index} token(s) had arrived and are kept.)" if run.index else "."),
                status=code if isinstance(code, int) else None,
            )
        problem = None
        try:
            return run.chunk(obj)
        except Malformed as exc:
            problem = str(exc)
        raise BadResponse(
            f"The server at {self.faults.where} sent a chunk this backend cannot read ({problem})."
            + (f" {run.index} token(s) had arrived and are kept." if run.index else "")
        )

