"""The exchange between an HTTP helper thread and the thread that waits for the server.

Owns: ``Exchange`` (one HTTP request carried out on a short-lived daemon helper thread, which
only moves what arrives into a bounded queue), ``Kind`` and ``Message`` (what the helper hands
over: the response head, a stream line, a whole body, the end of a stream, or an error),
``Exchange.next`` (the waiting side: in ``POLL`` slices, so that ``cancel`` and a progress
deadline are honoured while the server is silent), and the exceptions of that waiting side:
``Cancelled``, ``Stalled`` and ``TooLarge``.

Threads: ``Exchange.__init__`` starts the helper thread (``samplescope-http``), which sends the
request with sync httpx and puts messages into ``queue``; ``next`` and ``abort`` are called by
the one thread that owns the exchange (the model worker, or one of ``app.core.parallel``'s
helpers for concurrent remote jobs). ``abort`` shuts the socket down so a blocked read returns
at once and the server sees the disconnect. No Qt.
"""

from __future__ import annotations

import enum
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from ..sse import LineSplitter, LineTooLong
from ..text import clean_json

__all__ = ["Exchange", "Kind", "Message", "TooLarge", "Cancelled", "Stalled", "POLL", "QUEUE_ITEMS"]

POLL = 0.02  # seconds between cancel checks while waiting for the server
QUEUE_ITEMS = 4096  # stream lines the helper thread may read ahead of the consumer


class Kind(enum.Enum):
    """What a ``Message`` from the helper thread carries in its ``value``."""

    HEAD = "head"  # the httpx.Response, its headers read (always the first message)
    LINE = "line"  # one line (str) of an event stream
    END = "end"  # the event stream ended (value None)
    BODY = "body"  # the whole body (bytes) of an answer that is not an event stream
    ERROR = "error"  # the exception that ended the exchange (a TooLarge, an httpx error, ...)


@dataclass(frozen=True, slots=True)
class Message:
    """One item the helper thread hands to the waiting thread."""

    kind: Kind
    value: Any = None


class TooLarge(Exception):
    """The server's answer (or one line of its stream) is larger than we read."""


class Cancelled(Exception):
    """``cancel`` was set while waiting (the exchange is aborted)."""


class Stalled(Exception):
    """No progress (no new token) within ``progress_timeout``."""


class Exchange:
    """One HTTP request carried out on a daemon helper thread. The helper puts a ``HEAD``
    message (the response), then ``LINE`` messages and an ``END`` for an event stream, or one
    ``BODY`` otherwise, or an ``ERROR``, into ``queue``. ``abort`` makes it stop at once.

    Sizes are bounded: a body longer than ``max_body`` bytes or a stream line longer than
    ``max_line`` bytes ends the exchange with an ``ERROR`` holding a ``TooLarge`` as soon as
    that many bytes arrived, and the queue holds at most ``QUEUE_ITEMS`` lines (the helper
    waits while the consumer catches up), so a server cannot make us hold more than that in
    memory."""

    def __init__(self, client: httpx.Client, method: str, path: str, body: Any, *,
                 max_body: int = 32 << 20, max_line: int = 4 << 20) -> None:
        self.queue: queue.Queue[Message] = queue.Queue(maxsize=QUEUE_ITEMS)
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

    # ---------------------------------------------------------------- the waiting thread
    def next(self, cancel: threading.Event | None, deadline: float | None = None) -> Message:
        """The helper's next message. With ``cancel`` or ``deadline`` (a ``time.monotonic()``
        value) it waits in ``POLL`` slices and raises ``Cancelled`` / ``Stalled`` (the exchange
        aborted) when one of them comes first."""
        if cancel is None and deadline is None:
            return self.queue.get()
        while True:
            try:
                return self.queue.get(timeout=POLL)
            except queue.Empty:
                if cancel is not None and cancel.is_set():
                    self.abort()
                    raise Cancelled() from None
                if deadline is not None and time.monotonic() > deadline:
                    self.abort()
                    raise Stalled() from None

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

    # ---------------------------------------------------------------- the helper thread
    def _put(self, kind: Kind, value: Any = None) -> bool:
        """Queue a message, waiting while the queue is full; False once the exchange is aborted."""
        item = Message(kind, value)
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=POLL)
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
            if not self._put(Kind.HEAD, resp):
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
                        self._put(Kind.ERROR, TooLarge(str(exc)))
                        return
                    for line in lines:
                        if not self._put(Kind.LINE, line):
                            return
                for line in splitter.flush():
                    self._put(Kind.LINE, line)
                self._put(Kind.END)
            else:
                data = bytearray()
                for chunk in resp.iter_bytes():
                    if self._stop.is_set():
                        return
                    data += chunk
                    if len(data) > self.max_body:
                        self._put(Kind.ERROR, TooLarge(f"the answer is larger than {self.max_body:,} bytes"))
                        return
                self._put(Kind.BODY, bytes(data))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            if not self._stop.is_set():
                self._put(Kind.ERROR, exc)
        finally:
            with self._lock:
                self._over = True
            if resp is not None:
                try:
                    resp.close()
                except Exception:  # noqa: BLE001
                    pass
