"""app.core.parallel.run_jobs against a server: at most ``max_parallel`` requests in flight (and
that many reached, so a server can batch them), items tagged with their job, one failing job
ending only itself, a Stop keeping what finished. The local path runs on the real model in the
VS, shift and align tests (tests/test_vs_lab.py and others)."""

from __future__ import annotations

import threading

import httpx
import pytest

from app.core.parallel import TICK, JobResult, run_jobs
from backends.openai_compat import OpenAICompatBackend

URL = "http://127.0.0.1:9/v1"


class _Gate:
    """A server handler that holds each request until ``width`` of them are in flight (or the
    last ones arrive), counting the most seen at once. No timing: the gate opens on counts."""

    def __init__(self, width: int, total: int) -> None:
        self.width, self.total = width, total
        self.lock = threading.Condition()
        self.in_flight = self.most = self.arrived = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.in_flight += 1
            self.arrived += 1
            self.most = max(self.most, self.in_flight)
            self.lock.notify_all()
            # wait until the batch is full, or no more requests can come to fill it
            self.lock.wait_for(lambda: self.in_flight >= self.width or self.arrived >= self.total, timeout=60)
            self.in_flight -= 1
            self.lock.notify_all()
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})


@pytest.mark.parametrize("width", [1, 3, 8])
def test_requests_in_flight_reach_the_bound_and_never_pass_it(width):
    gate = _Gate(width, total=12)
    backend = OpenAICompatBackend(URL, "m", transport=httpx.MockTransport(gate))

    def job(b, i):
        yield ("asked", i)
        return b.list_models()

    out = list(run_jobs([lambda b, i=i: job(b, i) for i in range(12)], backend=backend, max_parallel=width))
    backend.close()
    assert gate.most == min(width, 12)
    ends = {i: r for i, r in out if isinstance(r, JobResult)}
    assert sorted(ends) == list(range(12)) and all(r.value == ["m"] and r.error is None for r in ends.values())
    assert sorted(i for i, r in out if not isinstance(r, JobResult)) == list(range(12))
    assert all(r[1] == i for i, r in out if not isinstance(r, JobResult))  # items tagged with their own job


def test_a_failing_job_ends_only_itself():
    backend = object()

    def good(b):
        yield TICK  # not passed on
        return "ok"

    def bad(b):
        raise ValueError("this one breaks")
        yield  # unreachable: makes this a generator

    out = list(run_jobs([good, bad, good], backend=backend, max_parallel=2))
    ends = {i: r for i, r in out if isinstance(r, JobResult)}
    assert ends[0].value == ends[2].value == "ok"
    assert isinstance(ends[1].error, ValueError) and ends[1].value is None
    assert all(isinstance(r, JobResult) for _i, r in out)  # TICK never reaches the caller


def test_a_stop_before_a_job_starts_leaves_it_without_a_result():
    cancel = threading.Event()
    started = []

    def job(b, i):
        started.append(i)
        cancel.set()  # the first job to run presses Stop
        return i
        yield  # unreachable: makes this a generator

    out = list(run_jobs([lambda b, i=i: job(b, i) for i in range(6)], backend=object(), max_parallel=1, cancel=cancel))
    ends = {i: r for i, r in out if isinstance(r, JobResult)}
    assert sorted(ends) == list(range(6))
    assert [ends[i].value for i in started] == started  # what ran keeps its result
    assert all(ends[i].value is None and ends[i].error is None for i in range(6) if i not in started)
    assert len(started) == 1


def test_exactly_one_of_context_or_backend():
    with pytest.raises(ValueError):
        list(run_jobs([], max_parallel=2))
    with pytest.raises(ValueError):
        list(run_jobs([], context=object(), backend=object()))
