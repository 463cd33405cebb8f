"""Many JSON requests to an OpenAI-compatible server, a bounded number at a time.

Owns: ``run_batch`` (blocking; runs its own event loop with ``asyncio.run``), its coroutine
``run_batch_async`` and the frozen ``BatchResult``. Uses async httpx; no Qt.

Thread: the worker thread of the lab that starts the batch (never the GUI thread: it blocks until
every request has finished). ``on_result`` is called on that same thread, inside the batch's event
loop, as each request finishes, so it should be quick (e.g. one run-store write). Stop from any
thread by setting the ``cancel`` event.

Behaviour:

- at most ``max_in_flight`` requests are in flight (an ``asyncio.Semaphore``); new ones are
  launched only while a slot is free, so a batch of thousands holds only that many tasks;
- a 429 from ANY request pauses ALL of them: one shared "resume at" time that every request waits
  for before it is sent (or re-sent). It honours ``Retry-After`` (seconds or an HTTP date) and
  otherwise backs off exponentially with jitter; the exponent grows only for a 429 to a request
  sent after the last pause began, so four parallel 429s count as one;
- 5xx answers (not 501/505) and network errors are retried with the same backoff, per request;
- every request is tried at most ``1 + max_retries`` times; then its result says why it failed;
- other 4xx answers fail at once with a message for the user (401/403 the key, 404 the URL/model).

The API key travels only in the ``Authorization`` header. It is never put in a result: error texts
and error bodies are scrubbed of it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

import httpx

from .openai_compat import parse_retry_after

__all__ = ["BatchResult", "run_batch", "run_batch_async", "CANCELLED", "MAX_RETRY_AFTER"]

#: ``BatchResult.error`` of a request stopped by ``cancel`` (never sent, or abandoned in flight).
CANCELLED = "Cancelled."
#: The longest ``Retry-After`` (seconds) a batch waits for; a server asking for more fails the
#: request with a message instead of hanging the batch for hours.
MAX_RETRY_AFTER = 300.0
_CANCEL_POLL = 0.01
_MASK = "\u2022\u2022\u2022\u2022"
_NOT_RETRIED_5XX = {501, 505}


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What became of request ``index`` (its position in the input).

    ``ok`` is True for a 2xx answer with a JSON body, then in ``json``. ``status`` is the last
    HTTP status (``None`` when no answer arrived). On failure ``error`` is a sentence for the user
    and ``json`` the error body when the server sent JSON. ``attempts`` counts the requests sent.
    """

    index: int
    ok: bool
    status: int | None
    json: Any
    error: str | None
    attempts: int

    @property
    def cancelled(self) -> bool:
        return self.error == CANCELLED


class _Pause:
    """The pause shared by every request of a batch (only touched on the batch's event loop)."""

    def __init__(self) -> None:
        self.resume_at = 0.0  # time.monotonic() before which nothing is sent
        self.epoch = 0  # bumped each time a new pause begins
        self.streak = 0  # consecutive pauses without a success in between


def run_batch(
    requests: Sequence[dict],
    *,
    base_url: str,
    api_key: str | None = None,
    endpoint: str = "/v1/completions",
    max_in_flight: int = 4,
    max_retries: int = 3,
    timeout: float = 60.0,
    transport: httpx.AsyncBaseTransport | None = None,
    on_result: Callable[[BatchResult], None] | None = None,
    cancel: threading.Event | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    backoff_base: float = 0.5,
    backoff_max: float = 30.0,
) -> list[BatchResult]:
    """POST each JSON body of ``requests`` to ``base_url + endpoint`` and return one
    ``BatchResult`` per request, in input order. Blocks; call it from a worker thread (it runs
    its own event loop, so not from inside a running one: use ``run_batch_async`` there).

    ``transport`` replaces the network (tests: ``httpx.MockTransport``); ``sleep`` replaces
    ``asyncio.sleep`` for every wait (tests). Backoff without ``Retry-After`` waits
    ``min(backoff_max, backoff_base * 2**(n-1))`` seconds times a random factor in [0.5, 1).
    ``on_result`` is called once for each request that finishes, success or final failure (not
    for requests stopped by ``cancel``); if it raises, the batch stops and the error propagates.
    When ``cancel`` is set no new request is sent, those in flight are abandoned, and their
    results say ``CANCELLED``.
    """
    return asyncio.run(
        run_batch_async(
            requests, base_url=base_url, api_key=api_key, endpoint=endpoint,
            max_in_flight=max_in_flight, max_retries=max_retries, timeout=timeout,
            transport=transport, on_result=on_result, cancel=cancel, sleep=sleep,
            backoff_base=backoff_base, backoff_max=backoff_max,
        )
    )


async def run_batch_async(
    requests: Sequence[dict],
    *,
    base_url: str,
    api_key: str | None = None,
    endpoint: str = "/v1/completions",
    max_in_flight: int = 4,
    max_retries: int = 3,
    timeout: float = 60.0,
    transport: httpx.AsyncBaseTransport | None = None,
    on_result: Callable[[BatchResult], None] | None = None,
    cancel: threading.Event | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    backoff_base: float = 0.5,
    backoff_max: float = 30.0,
) -> list[BatchResult]:
    """The coroutine behind ``run_batch`` (same arguments and results) for callers that already
    run an event loop."""
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    if max_retries < 0:
        raise ValueError("max_retries must not be negative")
    n = len(requests)
    results: list[BatchResult | None] = [None] * n
    if n == 0:
        return []
    headers = {"Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    pause = _Pause()
    sem = asyncio.Semaphore(max_in_flight)
    attempts = [0] * n
    tasks: dict[int, asyncio.Task] = {}
    stop = asyncio.Event()
    callback_error: list[BaseException] = []

    def backoff(k: int) -> float:
        return min(backoff_max, backoff_base * 2 ** max(0, k - 1)) * random.uniform(0.5, 1.0)

    def finish(result: BatchResult) -> None:
        results[result.index] = result
        if on_result is not None and not callback_error:
            try:
                on_result(result)
            except BaseException as exc:  # stop the batch and re-raise in the caller
                callback_error.append(exc)
                stop.set()

    async def wait_for_resume() -> None:
        # Re-check only if another 429 moved the resume time while we slept, so an injected
        # sleep that does not really wait still ends the pause.
        while True:
            target = pause.resume_at
            delay = target - time.monotonic()
            if delay <= 0:
                return
            await sleep(delay)
            if pause.resume_at == target:
                return

    async def one(client: httpx.AsyncClient, i: int) -> None:
        try:
            result = await _send_with_retries(
                client, i, requests[i], endpoint, api_key, base_url, timeout, max_retries,
                pause, attempts, wait_for_resume, backoff, sleep,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a body that is not JSON-serialisable, an invalid URL, ...
            result = _fail(i, None, None, f"The request could not be sent ({type(exc).__name__}: {exc}).",
                           attempts[i], api_key)
        finally:
            sem.release()
        finish(result)

    async def watch_cancel() -> None:
        while not stop.is_set():
            if cancel is not None and cancel.is_set():
                stop.set()
                return
            await asyncio.sleep(_CANCEL_POLL)

    async with httpx.AsyncClient(
        base_url=base_url,
        headers=headers,
        timeout=httpx.Timeout(timeout),
        transport=transport,
        limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight),
    ) as client:
        watcher = asyncio.create_task(watch_cancel())
        stopper = asyncio.create_task(stop.wait())
        try:
            for i in range(n):
                if cancel is not None and cancel.is_set():
                    stop.set()
                acquire = asyncio.create_task(sem.acquire())
                await asyncio.wait({acquire, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set():
                    if acquire.done() and not acquire.cancelled():
                        sem.release()
                    acquire.cancel()
                    break
                tasks[i] = asyncio.create_task(one(client, i))
            pending = [t for t in tasks.values() if not t.done()]
            while pending and not stop.is_set():
                await asyncio.wait(pending + [stopper], return_when=asyncio.FIRST_COMPLETED)
                pending = [t for t in pending if not t.done()]
            for t in tasks.values():
                t.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
        finally:
            watcher.cancel()
            stopper.cancel()
            await asyncio.gather(watcher, stopper, return_exceptions=True)
    if callback_error:
        raise callback_error[0]
    return [
        r if r is not None else BatchResult(i, False, None, None, CANCELLED, attempts[i])
        for i, r in enumerate(results)
    ]


async def _send_with_retries(
    client: httpx.AsyncClient,
    i: int,
    body: dict,
    endpoint: str,
    api_key: str | None,
    base_url: str,
    timeout: float,
    max_retries: int,
    pause: _Pause,
    attempts: list[int],
    wait_for_resume: Callable[[], Awaitable[None]],
    backoff: Callable[[int], float],
    sleep: Callable[[float], Awaitable[Any]],
) -> BatchResult:
    """Send request ``i`` until it succeeds, fails for good or runs out of retries."""
    max_attempts = 1 + max_retries
    while True:
        await wait_for_resume()
        epoch = pause.epoch
        attempts[i] += 1
        n = attempts[i]
        last = n >= max_attempts
        try:
            response = await client.post(endpoint, json=body)
        except httpx.UnsupportedProtocol as exc:
            return _fail(i, None, None, f"The base URL {base_url!r} is not an http(s) URL ({exc}).", n, api_key)
        except httpx.TransportError as exc:
            if last:
                return _fail(i, None, None, _transport_message(exc, base_url, timeout, n), n, api_key)
            await sleep(backoff(n))
            continue

        status = response.status_code
        if 200 <= status < 300:
            pause.streak = 0
            try:
                data = response.json()
            except ValueError:
                return _fail(i, status, None, "The server's answer was not JSON (status "
                             f"{status}, starting {_snippet(response.text)!r}).", n, api_key)
            return BatchResult(i, True, status, data, None, n)

        error_body = _json_or_none(response)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is not None and retry_after > MAX_RETRY_AFTER:
            return _fail(i, status, error_body, f"The server answered {_status_text(response)} and asked to "
                         f"wait {retry_after:.0f} s, more than the {MAX_RETRY_AFTER:.0f} s a batch waits. "
                         "Try again later.", n, api_key)
        if status == 429:
            if last:
                return _fail(i, status, error_body, f"The server kept answering 429 Too Many Requests "
                             f"({n} attempts); wait a while or send fewer requests at once."
                             + _detail(error_body), n, api_key)
            if epoch == pause.epoch:  # a fresh 429, not one of a wave sent before the last pause
                pause.epoch += 1
                pause.streak += 1
                delay = retry_after if retry_after is not None else backoff(pause.streak)
                pause.resume_at = max(pause.resume_at, time.monotonic() + delay)
            elif retry_after is not None:
                pause.resume_at = max(pause.resume_at, time.monotonic() + retry_after)
            continue  # wait_for_resume() at the top of the loop
        if status >= 500 and status not in _NOT_RETRIED_5XX:
            if last:
                return _fail(i, status, error_body, f"The server failed with {_status_text(response)} on "
                             f"all {n} attempts." + _detail(error_body), n, api_key)
            await sleep(retry_after if retry_after is not None else backoff(n))
            continue
        return _fail(i, status, error_body, _client_error_message(response, endpoint, error_body), n, api_key)


# -- messages ----------------------------------------------------------------------------------


def _fail(i: int, status: int | None, body: Any, message: str, attempts: int, api_key: str | None) -> BatchResult:
    return BatchResult(i, False, status, _scrub_json(body, api_key), _scrub(message, api_key), attempts)


def _scrub(text: str, api_key: str | None) -> str:
    return text.replace(api_key, _MASK) if api_key and text else text


def _scrub_json(value: Any, api_key: str | None) -> Any:
    if not api_key or value is None:
        return value
    if isinstance(value, str):
        return _scrub(value, api_key)
    if isinstance(value, list):
        return [_scrub_json(v, api_key) for v in value]
    if isinstance(value, dict):
        return {_scrub_json(k, api_key): _scrub_json(v, api_key) for k, v in value.items()}
    return value


def _status_text(response: httpx.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".strip()


def _snippet(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _detail(body: Any) -> str:
    """' Server: <message>' from an OpenAI-style error body, or ''."""
    msg = None
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            msg = err.get("message")
        elif isinstance(err, str):
            msg = err
    return f" Server: {_snippet(str(msg), 200)}" if msg else ""


def _client_error_message(response: httpx.Response, endpoint: str, body: Any) -> str:
    status = response.status_code
    what = _status_text(response)
    if status in (401, 403):
        return f"The server refused the request ({what}): the API key is missing or wrong." + _detail(body)
    if status == 404:
        return (f"Not found ({what}): check the base URL, the endpoint {endpoint} and the model name."
                + _detail(body))
    return f"The server rejected the request ({what})." + _detail(body)


def _transport_message(exc: httpx.TransportError, base_url: str, timeout: float, attempts: int) -> str:
    tries = f" ({attempts} attempts)" if attempts > 1 else ""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"Could not connect to {base_url} within {timeout:g} s{tries}."
    if isinstance(exc, httpx.TimeoutException):
        return f"The server at {base_url} did not answer within {timeout:g} s{tries}."
    if isinstance(exc, httpx.ConnectError):
        return f"Could not connect to {base_url}{tries}: {exc or type(exc).__name__}."
    return f"The connection to {base_url} failed{tries}: {type(exc).__name__}: {exc}."

