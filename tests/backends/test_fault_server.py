"""The remote backend and ``samplescope generate`` against a hostile server on 127.0.0.1
(``tests/fault_server.py``): no hang, no unbounded growth, no traceback, nothing lost.

Each case runs the real HTTP path (httpx, sockets, the helper thread). A case that would hang
without its fix runs inside ``within``, which fails the test instead of blocking the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tracemalloc

import pytest

from backends.base import BadResponse, Finished, ReadTimeout, SamplerSettings, Step
from backends.openai_compat import OpenAICompatBackend
from tests.fault_server import MARKUP
from tests.processes import interrupt_after

SETTINGS = SamplerSettings(temperature=0.0, max_tokens=8, top_n=2)


def within(seconds: float, fn):
    """``fn()``'s result (or its exception), or a test failure if it takes longer than ``seconds``."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"still running after {seconds} s: the backend hangs")
    if "error" in out:
        raise out["error"]
    return out["value"]


def backend(fault_server, mode: str, **kw) -> OpenAICompatBackend:
    return OpenAICompatBackend(fault_server.url(mode), "fault", read_timeout=kw.pop("read_timeout", 30), **kw)


def drain(b: OpenAICompatBackend, settings: SamplerSettings = SETTINGS, **kw) -> tuple[list[Step], Finished]:
    items = list(b.stream("Say something", settings, **kw))
    steps = [x for x in items if isinstance(x, Step)]
    assert isinstance(items[-1], Finished)
    return steps, items[-1]


def test_the_control_mode_works(fault_server):
    with backend(fault_server, "ok") as b:
        steps, fin = drain(b)
    assert [s.token for s in steps] == ["Hello", ",", " world"] and fin.reason == "eos"
    assert fin.text == "Hello, world"


def test_a_stream_of_keep_alive_pings_ends_with_a_clear_timeout(fault_server):
    # every ping resets httpx's read timeout: only our "no token yet" deadline ends this
    with backend(fault_server, "pings", progress_timeout=1.0) as b:
        with pytest.raises(ReadTimeout, match="no token for 1 s .only keep-alive"):
            within(30, lambda: drain(b))


def test_pings_after_some_tokens_keep_the_tokens(fault_server):
    with backend(fault_server, "pings-after-2", progress_timeout=1.0) as b:
        steps, fin = within(30, lambda: drain(b))
    assert [s.token for s in steps] == ["A", "B"]
    assert fin.reason == "incomplete" and "no new token for 1 s" in fin.message and fin.text == "AB"


def test_a_server_that_ignores_max_tokens_is_not_read_past_it(fault_server):
    with backend(fault_server, "no-limit") as b:
        steps, fin = within(60, lambda: drain(b))
    assert len(steps) == SETTINGS.max_tokens == fin.n_tokens
    assert fin.reason == "length" and "ignores max_tokens" in fin.message
    assert fin.text == "".join(s.token for s in steps) == "".join(f" t{i}" for i in range(8))


@pytest.mark.parametrize("mode, limit", [("huge-body", "max_body_bytes"), ("huge-line", "max_line_bytes")])
def test_a_huge_answer_is_refused_without_reading_it_whole(fault_server, mode, limit):
    tracemalloc.start()
    try:
        with backend(fault_server, mode, **{limit: 1 << 20}) as b:
            with pytest.raises(BadResponse, match="more than Samplescope reads"):
                within(60, lambda: drain(b))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # the answer is 50 MB; what was held stays near the 1 MiB limit (chunks, the queue, json)
    assert peak < 12 * (1 << 20), peak
    # the default limits refuse it too
    with backend(fault_server, mode) as b:
        with pytest.raises(BadResponse):
            within(60, lambda: drain(b))


def test_overflowing_logprobs_read_as_probability_one(fault_server):
    with backend(fault_server, "overflow") as b:
        steps, fin = drain(b)
    assert [s.p_raw for s in steps] == [1.0, 1.0] and fin.reason == "length"
    assert all(0.0 <= a.p_raw <= 1.0 for s in steps for a in s.top)


def test_a_surrogate_pair_split_across_two_tokens_is_joined(fault_server):
    with backend(fault_server, "split-emoji") as b:
        steps, fin = drain(b)
    assert fin.text == "smile \U0001F600!"
    assert "".join(s.token for s in steps) == fin.text
    for s in steps:  # every text we hand on encodes: nothing half a character
        s.token.encode("utf-8")
        s.piece.encode("utf-8")


def test_json_nested_100000_deep_is_a_bad_response(fault_server):
    with backend(fault_server, "deep-json") as b:
        with pytest.raises(BadResponse, match="not JSON"):
            drain(b)


def test_a_cut_stream_keeps_what_arrived(fault_server):
    with backend(fault_server, "cut") as b:
        steps, fin = drain(b)
    assert fin.reason == "incomplete" and fin.text == "one two three" and len(steps) == 3


def test_model_names_with_markup_are_kept_as_text(fault_server):
    with backend(fault_server, "markup") as b:
        assert b.list_models() == [f"{MARKUP} model"]


# ------------------------------------------------------------------ the command line, as a user runs it


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "app", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})


@pytest.mark.parametrize("mode, expect", [("split-emoji", "smile \U0001F600!"), ("overflow", "big bigger")])
def test_generate_prints_every_step_and_the_summary(fault_server, mode, expect):
    p = _cli("generate", "--base-url", fault_server.url(mode), "--model", "fault", "--prompt", "hi", "--json",
             env={"PYTHONIOENCODING": "utf-8"})
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err.decode()
    assert b"Traceback" not in err
    lines = [json.loads(x) for x in out.decode("utf-8").splitlines()]
    assert lines[-1]["summary"]["text"] == expect


def test_ctrl_c_during_a_remote_stream_keeps_the_text(fault_server):
    p = _cli("generate", "--base-url", fault_server.url("slow"), "--model", "fault", "--prompt", "hi", "--json",
             "--max-tokens", "2000")
    printed, rest, err = interrupt_after(p, 4)
    assert p.returncode == 130 and b"Traceback" not in err
    steps = printed + [r for r in rest if "summary" not in r]
    summary = rest[-1]["summary"]
    assert summary["finish_reason"] == "cancelled"
    assert summary["n_tokens"] == len(steps) >= 4
    assert summary["text"] == "".join(s["token"] for s in steps) != ""
