"""Tests for backends.batch.run_batch: the in-flight bound, the shared 429 pause, retries,
input order, on_result, cancel, key hygiene, and one run over a real socket on 127.0.0.1.

Faults use ``httpx.MockTransport`` with an async handler; waits go through an injected sleep
that records the requested delay and really sleeps only a scaled-down fraction of it."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time

import httpx
import pytest

from backends.batch import CANCELLED, BatchResult, run_batch

BASE = "http://test.invalid"
KEY = "sk-test-SECRET-0123456789"


class Recorder:
    """An injected ``sleep``: records each requested delay, really sleeps ``delay * scale``."""

    def __init__(self, scale: float = 0.0) -> None:
        self.delays: list[float] = []
        self.scale = scale

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(delay * self.scale)


def ok_json(request: httpx.Request, **extra) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(200, json={"echo": body["i"], **extra})


def bodies(n: int) -> list[dict]:
    return [{"model": "m", "prompt": f"p{i}", "i": i} for i in range(n)]


# -- concurrency, order, callbacks ---------------------------------------------------------------


@pytest.mark.parametrize("bound", [1, 3])
def test_in_flight_never_exceeds_the_bound_and_reaches_it(bound):
    active = 0
    seen: list[int] = []
    reached = None

    async def handler(request):
        nonlocal active, reached
        if reached is None:
            reached = asyncio.Event()
        active += 1
        seen.append(active)
        if active >= bound:
            reached.set()
        try:  # hold until the bound was reached once (or a short timeout), then a few ms
            await asyncio.wait_for(reached.wait(), 0.5)
        except asyncio.TimeoutError:
            pass
        await asyncio.sleep(0.002)
        active -= 1
        return ok_json(request)

    results = run_batch(bodies(10), base_url=BASE, max_in_flight=bound, transport=httpx.MockTransport(handler))
    assert max(seen) == bound
    assert all(r.ok for r in results) and len(results) == 10


def test_results_in_input_order_and_on_result_once_per_request():
    import random

    async def handler(request):
        await asyncio.sleep(random.uniform(0, 0.003))  # finish out of order
        return ok_json(request)

    called: list[BatchResult] = []
    results = run_batch(bodies(12), base_url=BASE, max_in_flight=4, transport=httpx.MockTransport(handler),
                        on_result=called.append)
    assert [r.index for r in results] == list(range(12))
    assert [r.json["echo"] for r in results] == list(range(12))
    assert all(r.ok and r.status == 200 and r.attempts == 1 and r.error is None for r in results)
    assert sorted(r.index for r in called) == list(range(12))  # once each
    assert {r.index: r for r in called} == {r.index: r for r in results}
    with pytest.raises(Exception):
        results[0].ok = False  # frozen


def test_posts_json_to_the_endpoint_with_the_key_only_in_the_authorization_header():
    seen: list[httpx.Request] = []

    async def handler(request):
        seen.append(request)
        return ok_json(request)

    run_batch(bodies(2), base_url=BASE + "/v1", endpoint="chat/completions", api_key=KEY,
              transport=httpx.MockTransport(handler))
    for req in seen:
        assert req.method == "POST" and req.url.path == "/v1/chat/completions"
        assert req.headers["authorization"] == f"Bearer {KEY}"
        assert req.headers["content-type"] == "application/json"
        others = {k: v for k, v in req.headers.items() if k != "authorization"}
        assert KEY not in json.dumps(others) and KEY not in str(req.url) and KEY.encode() not in req.content


def test_empty_batch_and_bad_arguments():
    assert run_batch([], base_url=BASE) == []
    with pytest.raises(ValueError):
        run_batch(bodies(1), base_url=BASE, max_in_flight=0)
    with pytest.raises(ValueError):
        run_batch(bodies(1), base_url=BASE, max_retries=-1)


# -- 429: everyone backs off together ----------------------------------------------------------------


def test_a_429_with_retry_after_pauses_every_request():
    sleep = Recorder(scale=0.005)  # Retry-After 2 s -> 10 ms of real time
    log: list[tuple[float, int, int]] = []  # (time, request, status answered)
    first = True

    async def handler(request):
        nonlocal first
        i = json.loads(request.content)["i"]
        now = time.monotonic()
        if i == 0 and first:
            first = False
            log.append((now, i, 429))
            return httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"message": "slow down"}})
        await asyncio.sleep(0.001)
        log.append((now, i, 200))
        return ok_json(request)

    results = run_batch(bodies(8), base_url=BASE, max_in_flight=4, transport=httpx.MockTransport(handler),
                        sleep=sleep)
    assert all(r.ok for r in results)
    assert results[0].attempts == 2 and all(r.attempts == 1 for r in results[1:])
    t429 = next(t for t, _, s in log if s == 429)
    sent_after = [(t, i) for t, i, s in log if s == 200 and t > t429]
    # The retry of 0 and the requests launched later (4..7) were all sent after the 429, and no
    # request at all was sent before the pause (10 ms here) was over.
    assert {0, 4, 5, 6, 7} <= {i for _, i in sent_after}
    assert all(t - t429 >= 0.009 for t, _ in sent_after)
    # The pause asked for honours Retry-After exactly (no shorter), and several requests waited on it.
    waits = [d for d in sleep.delays if d > 1.0]
    assert len(waits) >= 2 and all(1.9 <= d <= 2.0 for d in waits)


def test_429_without_retry_after_backs_off_exponentially_with_jitter():
    sleep = Recorder()
    answers = iter([429, 429, 200])

    async def handler(request):
        status = next(answers)
        return ok_json(request) if status == 200 else httpx.Response(429)

    [r] = run_batch(bodies(1), base_url=BASE, transport=httpx.MockTransport(handler), sleep=sleep,
                    backoff_base=1.0, backoff_max=30.0)
    assert r.ok and r.attempts == 3
    assert len(sleep.delays) == 2
    assert 0.5 <= sleep.delays[0] <= 1.0 and 1.0 <= sleep.delays[1] <= 2.0


def test_a_wave_of_parallel_429s_counts_as_one_backoff_step():
    sleep = Recorder()
    hits = {}

    async def handler(request):
        i = json.loads(request.content)["i"]
        hits[i] = hits.get(i, 0) + 1
        await asyncio.sleep(0.001)
        return httpx.Response(429) if hits[i] == 1 else ok_json(request)

    results = run_batch(bodies(4), base_url=BASE, max_in_flight=4, transport=httpx.MockTransport(handler),
                        sleep=sleep, backoff_base=1.0)
    assert all(r.ok and r.attempts == 2 for r in results)
    assert sleep.delays and max(sleep.delays) <= 1.0  # not 2, 4, 8: the four 429s were one wave


def test_429_retries_exhausted_gives_a_clear_error():
    calls = 0

    async def handler(request):
        nonlocal calls
        calls += 1
        return httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"message": "quota"}})

    seen: list[BatchResult] = []
    [r] = run_batch(bodies(1), base_url=BASE, max_retries=2, transport=httpx.MockTransport(handler),
                    sleep=Recorder(), on_result=seen.append)
    assert calls == 3 and r.attempts == 3
    assert not r.ok and r.status == 429
    assert "429" in r.error and "3 attempts" in r.error and "quota" in r.error
    assert seen == [r]


def test_retry_after_longer_than_the_limit_fails_instead_of_hanging():
    async def handler(request):
        return httpx.Response(429, headers={"Retry-After": "86400"})

    [r] = run_batch(bodies(1), base_url=BASE, transport=httpx.MockTransport(handler), sleep=Recorder())
    assert not r.ok and r.attempts == 1 and "86400" in r.error


# -- 5xx and other failures ----------------------------------------------------------------------


def test_5xx_is_retried_then_succeeds():
    sleep = Recorder()
    answers = iter([500, 503, 200])

    async def handler(request):
        status = next(answers)
        return ok_json(request, done=True) if status == 200 else httpx.Response(status, text="oops")

    [r] = run_batch(bodies(1), base_url=BASE, transport=httpx.MockTransport(handler), sleep=sleep)
    assert r.ok and r.attempts == 3 and r.json == {"echo": 0, "done": True}
    assert len(sleep.delays) == 2


def test_5xx_retries_exhausted_gives_ok_false_and_a_clear_error():
    async def handler(request):
        return httpx.Response(502, json={"error": {"message": f"upstream down, key {KEY}"}})

    [r] = run_batch(bodies(1), base_url=BASE, api_key=KEY, max_retries=3,
                    transport=httpx.MockTransport(handler), sleep=Recorder())
    assert not r.ok and r.status == 502 and r.attempts == 4
    assert r.error.startswith("The server failed with 502 Bad Gateway on all 4 attempts.")
    assert "upstream down" in r.error
    # the key never reaches a result, even when the server echoes it
    assert KEY not in r.error and KEY not in json.dumps(r.json)


@pytest.mark.parametrize(
    "status, words",
    [(401, "API key is missing or wrong"), (403, "API key is missing or wrong"), (404, "endpoint"),
     (400, "rejected")],
)
def test_client_errors_fail_at_once(status, words):
    async def handler(request):
        return httpx.Response(status, json={"error": {"message": "nope"}})

    [r] = run_batch(bodies(1), base_url=BASE, transport=httpx.MockTransport(handler), sleep=Recorder())
    assert not r.ok and r.status == status and r.attempts == 1
    assert words in r.error and "nope" in r.error and r.json == {"error": {"message": "nope"}}


def test_a_body_that_is_not_json_and_a_network_error():
    async def not_json(request):
        return httpx.Response(200, text="<html>gateway</html>")

    [r] = run_batch(bodies(1), base_url=BASE, transport=httpx.MockTransport(not_json))
    assert not r.ok and r.status == 200 and "not JSON" in r.error and "<html>" in r.error

    async def refused(request):
        raise httpx.ConnectError("Connection refused", request=request)

    sleep = Recorder()
    [r] = run_batch(bodies(1), base_url=BASE, max_retries=1, transport=httpx.MockTransport(refused), sleep=sleep)
    assert not r.ok and r.status is None and r.attempts == 2
    assert "Could not connect" in r.error and "Connection refused" in r.error and len(sleep.delays) == 1


# -- cancel and callbacks ----------------------------------------------------------------------


def test_cancel_stops_launching_and_cancels_requests_in_flight():
    cancel = threading.Event()
    started: list[int] = []

    async def handler(request):
        i = json.loads(request.content)["i"]
        started.append(i)
        if i < 2:
            return ok_json(request)
        if i == 2:
            cancel.set()
        await asyncio.sleep(5)  # only cancellation ends this quickly
        return ok_json(request)

    done: list[BatchResult] = []
    t0 = time.monotonic()
    results = run_batch(bodies(20), base_url=BASE, max_in_flight=2, transport=httpx.MockTransport(handler),
                        cancel=cancel, on_result=done.append)
    assert time.monotonic() - t0 < 1.0
    assert len(results) == 20 and [r.index for r in results] == list(range(20))
    assert results[0].ok and results[1].ok
    assert all(r.cancelled and not r.ok and r.error == CANCELLED for r in results[2:])
    assert max(started) <= 3  # nothing launched after the cancel
    assert results[2].attempts == 1 and results[10].attempts == 0
    assert sorted(r.index for r in done) == [0, 1]  # cancelled requests are not reported


def test_cancel_set_before_the_start_sends_nothing():
    cancel = threading.Event()
    cancel.set()
    calls = 0

    async def handler(request):
        nonlocal calls
        calls += 1
        return ok_json(request)

    results = run_batch(bodies(3), base_url=BASE, transport=httpx.MockTransport(handler), cancel=cancel)
    assert calls <= 1 and all(r.cancelled for r in results[1:])


def test_cancel_during_a_429_pause():
    cancel = threading.Event()

    async def slow_sleep(delay):
        cancel.set()
        await asyncio.sleep(5)

    async def handler(request):
        return httpx.Response(429, headers={"Retry-After": "30"})

    t0 = time.monotonic()
    results = run_batch(bodies(3), base_url=BASE, transport=httpx.MockTransport(handler), cancel=cancel,
                        sleep=slow_sleep)
    assert time.monotonic() - t0 < 1.0
    assert all(r.cancelled for r in results)


def test_on_result_raising_stops_the_batch_and_propagates():
    async def handler(request):
        return ok_json(request)

    def boom(result):
        raise RuntimeError("store full")

    with pytest.raises(RuntimeError, match="store full"):
        run_batch(bodies(5), base_url=BASE, max_in_flight=1, transport=httpx.MockTransport(handler), on_result=boom)


def test_callable_from_a_worker_thread():
    async def handler(request):
        return ok_json(request)

    out: list = []
    t = threading.Thread(target=lambda: out.append(run_batch(bodies(3), base_url=BASE,
                                                             transport=httpx.MockTransport(handler))))
    t.start()
    t.join(5)
    assert [r.json["echo"] for r in out[0]] == [0, 1, 2]


# -- the real network path -----------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, bound: int):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bound = bound
        self.lock = threading.Condition()
        self.active = 0
        self.max_active = 0
        self.auth: set[str] = set()
        self.paths: set[str] = set()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_POST(self):
        srv: _Server = self.server  # type: ignore[assignment]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.active += 1
            srv.max_active = max(srv.max_active, srv.active)
            srv.auth.add(self.headers.get("Authorization", ""))
            srv.paths.add(self.path)
            srv.lock.notify_all()
            srv.lock.wait_for(lambda: srv.max_active >= srv.bound, timeout=1.0)
        time.sleep(0.002)
        with srv.lock:
            srv.active -= 1
        if self.path != "/v1/completions":
            self.send_response(404)
            payload = b'{"error": {"message": "no such endpoint"}}'
        else:
            self.send_response(200)
            payload = json.dumps({"object": "text_completion",
                                  "choices": [{"index": 0, "text": body["prompt"].upper()}]}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def test_real_http_server_on_localhost():
    srv = _Server(bound=3)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        done: list[BatchResult] = []
        results = run_batch(bodies(9), base_url=base, api_key=KEY, max_in_flight=3, timeout=5.0,
                            on_result=done.append)
        assert [r.json["choices"][0]["text"] for r in results] == [f"P{i}" for i in range(9)]
        assert all(r.ok and r.status == 200 and r.attempts == 1 for r in results)
        assert srv.max_active == 3  # the bound was reached over real sockets, never exceeded
        assert srv.auth == {f"Bearer {KEY}"} and srv.paths == {"/v1/completions"}
        assert len(done) == 9

        [r] = run_batch(bodies(1), base_url=base, endpoint="/v1/nope", timeout=5.0)
        assert not r.ok and r.status == 404 and "no such endpoint" in r.error
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(2)


def test_connection_refused_on_a_real_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    [r] = run_batch(bodies(1), base_url=f"http://127.0.0.1:{port}", api_key=KEY, max_retries=0, timeout=2.0)
    assert not r.ok and r.status is None and "Could not connect" in r.error and KEY not in r.error
