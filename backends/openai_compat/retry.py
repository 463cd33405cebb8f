"""Sending a request to the server, with bounded retries and one shared 429 back-off.

Owns: ``Sender`` (one backend's way of sending: an ``Exchange`` per attempt; 429 and 5xx (not
501/505) retried up to ``max_retries`` times before anything was read, honouring
``Retry-After``, else exponential back-off with jitter; ``on_wait(seconds_left, reason)`` about
once a second while waiting; every other fault raised at once through ``Faults``),
``Sender.request_json`` (one JSON answer), ``parse_retry_after`` and ``RetrySettings`` (the limits
it reads from the backend, at each request).

The back-off is shared: concurrent requests of one backend (N-sample work, ``app.core.parallel``)
all wait while one of them waits out a 429's ``Retry-After``, instead of adding to the server's
load. That state is guarded by a lock.

Threads: ``send`` and ``request_json`` run on the thread that waits for the server (the model
worker, or one of ``app.core.parallel``'s helper threads, several at once); each request itself
runs on its ``Exchange``'s helper thread. Waits end early on ``cancel``. No Qt.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Protocol

import httpx

from ..base import RateLimited
from ..text import loads_json
from .exchange import Cancelled, Exchange, Kind
from .faults import Faults
from .request import answer_cap

__all__ = ["Sender", "RetrySettings", "parse_retry_after", "loads", "OnWait"]

log = logging.getLogger(__package__)  # the package's logger, as before the split

NOT_RETRIED_5XX = {501, 505}

#: ``on_wait(seconds_left, reason)``, called about once a second while a retry waits.
OnWait = Callable[[float, str], None]


class RetrySettings(Protocol):
    """The limits a ``Sender`` reads at each request (the backend's attributes)."""

    max_retries: int
    backoff_base: float
    backoff_max: float
    max_retry_after: float
    max_body_bytes: int
    max_line_bytes: int


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


def loads(data: str | bytes) -> tuple[Any, bool]:
    """(parsed JSON, True), or (None, False) for text that is not JSON."""
    try:
        return loads_json(data), True
    except ValueError:
        return None, False


class Sender:
    """Sends the requests of one backend through ``client``; ``faults`` makes its errors,
    ``settings`` holds its limits, ``sleep`` and ``rng`` are the waiting and the jitter of
    retries (tests replace them)."""

    def __init__(self, client: httpx.Client, faults: Faults, settings: RetrySettings, *,
                 sleep: Callable[[float], Any] = time.sleep, rng: Callable[[], float] = random.random) -> None:
        self.client = client
        self.faults = faults
        self.settings = settings
        self._sleep = sleep
        self._rng = rng
        self._pause_lock = threading.Lock()
        self._pause_until = 0.0  # time.monotonic() before which no request is sent (a shared 429 back-off)
        self._pause_owner: int | None = None  # the thread whose 429 set it

    # ---------------------------------------------------------------- waiting
    def _pause(self, seconds: float, cancel: threading.Event | None) -> None:
        if cancel is not None and self._sleep is time.sleep:
            cancel.wait(seconds)
        else:
            self._sleep(seconds)

    def _wait(self, seconds: float, reason: str, cancel: threading.Event | None, on_wait: OnWait | None) -> None:
        """Wait ``seconds``, calling ``on_wait(seconds_left, reason)`` about once a second."""
        left = seconds
        while left > 1e-9:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if on_wait is not None:
                on_wait(left, reason)
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
            step = min(1.0, left)
            self._pause(step, cancel)
            left -= step
        if on_wait is not None:
            on_wait(0.0, reason)
        if cancel is not None and cancel.is_set():
            raise Cancelled()

    def _wait_shared_pause(self, cancel: threading.Event | None, on_wait: OnWait | None) -> None:
        """Concurrent requests (N-sample work) share one 429 back-off: while another request's
        Retry-After is running, this one waits too instead of adding to the server's load."""
        with self._pause_lock:
            left = self._pause_until - time.monotonic()
            mine = self._pause_owner == threading.get_ident()  # it waited its own Retry-After already
        if left > 0.05 and not mine:
            self._wait(left, "Rate-limited by the server (HTTP 429): waiting with the other requests", cancel,
                       on_wait)

    def _backoff(self, attempt: int) -> float:
        d = min(self.settings.backoff_max, self.settings.backoff_base * (2 ** attempt))
        return d * (0.5 + 0.5 * self._rng())

    # ---------------------------------------------------------------- sending
    def send(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        cancel: threading.Event | None = None,
        on_wait: OnWait | None = None,
        retry_5xx: bool = True,
        model: str | None = None,
    ) -> tuple[Exchange, httpx.Response]:
        """Send with bounded retries on 429 (and 5xx); return the exchange of a 2xx answer
        (its head read) or raise."""
        limits = self.settings
        where = self.faults.where
        attempt = 0
        while True:
            self._wait_shared_pause(cancel, on_wait)
            ex = Exchange(self.client, method, path, body, max_body=answer_cap(body, limits.max_body_bytes),
                          max_line=limits.max_line_bytes)
            msg = ex.next(cancel)
            if msg.kind is Kind.ERROR:
                raise self.faults.transport_error(msg.value)
            resp: httpx.Response = msg.value
            status = resp.status_code
            if status < 300:
                return ex, resp
            msg = ex.next(cancel)  # the error body
            body_bytes = msg.value if msg.kind is Kind.BODY else b""
            retryable = status == 429 or (retry_5xx and status >= 500 and status not in NOT_RETRIED_5XX)
            if retryable and attempt < limits.max_retries:
                delay = parse_retry_after(resp.headers.get("retry-after")) if status in (429, 503) else None
                if delay is not None and delay > limits.max_retry_after:
                    e = RateLimited(
                        f"The server at {where} asks to wait {delay:.0f} s before the next request "
                        f"(HTTP {status}); that is longer than Samplescope waits ({limits.max_retry_after:.0f} s). "
                        "Try again later.", status=status,
                    )
                    e.retry_after = delay
                    raise e
                if delay is None:
                    delay = self._backoff(attempt)
                reason = (
                    f"Rate-limited by the server (HTTP 429), attempt {attempt + 2} of {limits.max_retries + 1}"
                    if status == 429 else
                    f"Server error (HTTP {status}), attempt {attempt + 2} of {limits.max_retries + 1}"
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
            raise self.faults.status_error(status, body_bytes, path, model, attempt + 1)

    def request_json(self, method: str, path: str, body: Any, *, retry_5xx: bool = True,
                     model: str | None = None, cancel: threading.Event | None = None,
                     on_wait: OnWait | None = None) -> Any:
        """``send``, then the answer's parsed JSON (``BadResponse`` when it is not JSON)."""
        ex, resp = self.send(method, path, body, retry_5xx=retry_5xx, model=model, cancel=cancel, on_wait=on_wait)
        try:
            msg = ex.next(cancel)
            if msg.kind is Kind.ERROR:
                err = self.faults.transport_error(msg.value)
                raise err
            if msg.kind is Kind.LINE:  # an event stream where JSON was expected
                raise self.faults.not_json(b"data: ...", resp.headers.get("content-type", ""), path)
            obj, ok = loads(msg.value) if msg.value is not None else (None, False)  # None: an empty stream
            if not ok:
                raise self.faults.not_json(msg.value or b"", resp.headers.get("content-type", ""), path)
            return obj
        finally:
            ex.abort()
