"""OpenAICompatBackend against scripted servers (httpx.MockTransport, and a few raw sockets on
127.0.0.1): every logprob shape the servers send, every fault, cancellation, and the API key
never leaking. Nothing here sleeps: waits go through an injected ``sleep``."""

from __future__ import annotations

import email.utils
import json
import logging
import math
import socket
import re
import ssl
import threading
import time
import traceback

import httpx
import pytest

from backends.base import (
    AuthenticationFailed,
    BackendError,
    BadResponse,
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
    RequestRejected,
    SamplerSettings,
    ServerFailed,
    Step,
    TLSFailed,
)
from backends.openai_compat import (
    TEXT_ONLY_NOTE,
    OpenAICompatBackend,
    ServerCapabilities,
    entropy_lower_bound,
    is_text_only,
    parse_logprobs,
)

KEY = "sk-test-SECRET-0123456789abcdef"
URL = "http://llm.example:8000/v1"
GREEDY = SamplerSettings(temperature=0.0, max_tokens=8, top_n=3)


# ---------------------------------------------------------------------------- helpers
class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, s: float) -> None:
        self.calls.append(s)

    @property
    def total(self) -> float:
        return sum(self.calls)


def make(handler, *, key=KEY, caps: ServerCapabilities | None = None, **kw) -> OpenAICompatBackend:
    kw.setdefault("sleep", Sleeps())
    kw.setdefault("rng", lambda: 0.5)
    b = OpenAICompatBackend(URL, "m", api_key=key, transport=httpx.MockTransport(handler), **kw)
    if caps is not None:
        b._caps["m"] = caps
    return b


def sse(*objs, done: bool = True) -> bytes:
    out = b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs)
    return out + (b"data: [DONE]\n\n" if done else b"")


def sse_response(body, status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "text/event-stream"}, content=body)


def run(backend, prompt="Hi", settings=GREEDY, **kw) -> tuple[list[Step], Finished]:
    steps, fin = [], None
    for item in backend.stream(prompt, settings, **kw):
        if isinstance(item, Step):
            steps.append(item)
        else:
            assert fin is None
            fin = item
    assert fin is not None
    return steps, fin


def legacy_chunk(tok: str, lp: float, top: dict[str, float], finish=None) -> dict:
    """One streamed chunk as llama-cpp-python's server sends it (recorded shape)."""
    return {
        "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"text": tok, "index": 0, "logprobs": {
            "tokens": [tok], "text_offset": [24], "token_logprobs": [lp], "top_logprobs": [top]},
            "finish_reason": finish}],
    }


def final_chunk(reason="length", chat=False) -> dict:
    if chat:
        return {"object": "chat.completion.chunk", "choices": [
            {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}]}
    return {"object": "text_completion", "choices": [
        {"text": "", "index": 0, "logprobs": None, "finish_reason": reason}]}


LLAMA_CPP_PYTHON_STREAM = [
    legacy_chunk(" the", -1.719446063041687,
                 {" the": -1.719446063041687, " a": -2.2265567779541016, " Paris": -2.395040512084961}),
    legacy_chunk(" capital", -0.7562668919563293,
                 {" capital": -0.7562668919563293, " city": -2.5793659687042236, " most": -2.7153522968292236}),
    # the chosen token is outside the top 3: llama-cpp-python appends it (4 entries)
    legacy_chunk(" and", -4.811169147491455,
                 {" of": -0.10781531035900116, " city": -2.7473111152648926, " in": -3.9,
                  " and": -4.811169147491455}),
    final_chunk("length"),
]


def streaming_handler(chunks, seen: list | None = None, status: int = 200):
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return sse_response(sse(*chunks), status)

    return handler


# ---------------------------------------------------------------------------- shapes
def test_llama_cpp_python_legacy_stream():
    seen: list[httpx.Request] = []
    steps, fin = run(make(streaming_handler(LLAMA_CPP_PYTHON_STREAM, seen)), "The capital of France is")
    assert [s.token for s in steps] == [" the", " capital", " and"]
    assert fin.reason == "length" and fin.text == " the capital and" and fin.n_tokens == 3
    s0 = steps[0]
    assert s0.token_id is None and s0.estimated and s0.index == 0 and s0.position == 0
    assert s0.p_raw == s0.p_final == pytest.approx(math.exp(-1.719446063041687))
    assert s0.rank == 1 and [a.token for a in s0.top] == [" the", " a", " Paris"]
    assert all(a.id is None and a.p_raw == a.p_final for a in s0.top)
    ps = [math.exp(x) for x in (-1.719446063041687, -2.2265567779541016, -2.395040512084961)]
    assert s0.unseen_mass == pytest.approx(1 - sum(ps))
    m = 1 - sum(ps)
    h = -sum(p * math.log(p) for p in ps) + m * -math.log(min(ps[-1], m))
    assert s0.entropy_raw == s0.entropy_final == pytest.approx(h)
    assert s0.kl_final_raw == 0.0 and s0.stages == ()
    s2 = steps[2]  # chosen token appended after the top 3
    assert s2.rank == 4 and s2.p_raw == pytest.approx(math.exp(-4.811169147491455))
    # the bound uses the 3rd shown p (the top-3 cut), not the appended chosen token's
    ps2 = [math.exp(x) for x in (-0.10781531035900116, -2.7473111152648926, -3.9, -4.811169147491455)]
    m2 = 1 - sum(ps2)
    assert s2.entropy_raw == pytest.approx(
        -sum(p * math.log(p) for p in ps2) + m2 * -math.log(min(ps2[2], m2)))
    body = json.loads(seen[0].content)
    assert body["prompt"] == "The capital of France is" and body["logprobs"] == 3
    assert body["stream"] is True and body["temperature"] == 0.0 and body["max_tokens"] == 8
    assert body["top_p"] == GREEDY.top_p and body["seed"] == GREEDY.seed and body["model"] == "m"
    assert "top_k" not in body and "min_p" not in body and "repeat_penalty" not in body  # not probed
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"


def test_llama_cpp_python_non_streamed_lists():
    obj = {"choices": [{"text": " the capital", "index": 0, "finish_reason": "length", "logprobs": {
        "text_offset": [24, 28], "token_logprobs": [-1.7, -0.75], "tokens": [" the", " capital"],
        "top_logprobs": [{" the": -1.7, " a": -2.2}, {" capital": -0.75, " city": -2.5}]}}],
        "usage": {"prompt_tokens": 6, "completion_tokens": 2, "total_tokens": 8}}
    b = make(lambda r: httpx.Response(200, json=obj))
    steps, fin = run(b)
    assert [s.token for s in steps] == [" the", " capital"] and [s.rank for s in steps] == [1, 1]
    assert fin.prompt_tokens == 6 and fin.reason == "length" and fin.text == " the capital"


def test_openai_chat_with_bytes_splitting_a_character():
    e_acute = list("é".encode())  # two bytes, sent as two tokens
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"content": "Caf"}, "finish_reason": None, "logprobs": {"content": [
            {"token": "Caf", "logprob": -0.1, "bytes": list(b"Caf"), "top_logprobs": [
                {"token": "Caf", "logprob": -0.1, "bytes": list(b"Caf")},
                {"token": "The", "logprob": -2.5, "bytes": list(b"The")}]}], "refusal": None}}]},
        {"choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": None, "logprobs": {"content": [
            {"token": "bytes:\\xc3", "logprob": -0.2, "bytes": e_acute[:1], "top_logprobs": [
                {"token": "bytes:\\xc3", "logprob": -0.2, "bytes": e_acute[:1]},
                {"token": "e", "logprob": -1.9, "bytes": [101]}]}]}}]},
        {"choices": [{"index": 0, "delta": {"content": "é"}, "finish_reason": None, "logprobs": {"content": [
            {"token": "bytes:\\xa9", "logprob": -0.01, "bytes": e_acute[1:], "top_logprobs": [
                {"token": "bytes:\\xa9", "logprob": -0.01, "bytes": e_acute[1:]}]}]}}]},
        final_chunk("stop", chat=True),
    ]
    seen = []
    b = make(streaming_handler(chunks, seen))
    steps, fin = run(b, None, messages=[{"role": "user", "content": "Say café"}])
    assert [s.token for s in steps] == ["Caf", "", "é"]  # the character waits for its 2nd byte
    assert [s.piece for s in steps] == ["Caf", "<0xC3>", "<0xA9>"]
    assert steps[1].top[1].token == "e" and steps[0].top[1].token == "The"
    assert fin.text == "Café" and fin.reason == "eos"  # "stop" without stop strings
    body = json.loads(seen[0].content)
    assert body["messages"] == [{"role": "user", "content": "Say café"}]
    assert body["logprobs"] is True and body["top_logprobs"] == 3 and "prompt" not in body


def test_openai_legacy_bytes_tokens_without_byte_lists():
    lp = {"tokens": ["bytes:\\xe2\\x80", "bytes:\\x94"], "token_logprobs": [-0.5, -0.1],
          "top_logprobs": [{"bytes:\\xe2\\x80": -0.5, " x": -1.5}, {"bytes:\\x94": -0.1}], "text_offset": [0, 0]}
    tls = parse_logprobs({"choices": [{"text": "—", "logprobs": lp}]})
    assert [t.bytes for t in tls] == [b"\xe2\x80", b"\x94"]
    b = make(lambda r: sse_response(sse({"choices": [{"text": "—", "index": 0, "logprobs": lp,
                                                     "finish_reason": "length"}]})))
    steps, fin = run(b)
    assert [s.token for s in steps] == ["", "—"] and steps[0].rank == 1


def test_llama_cpp_server_shapes_with_ids_and_bytes():
    """llama.cpp's C++ server: /v1/completions chunks carry logprobs.content with ids and bytes."""
    def entry(i, tok, lp, top):
        return {"id": i, "token": tok, "bytes": list(tok.encode()), "logprob": lp,
                "top_logprobs": [{"id": j, "token": t, "bytes": list(t.encode()), "logprob": l} for j, t, l in top]}

    chunks = [
        {"choices": [{"text": " Paris", "index": 0, "finish_reason": None, "logprobs": {"content": [
            entry(9079, " Paris", -0.3, [(9079, " Paris", -0.3), (506, " the", -1.6), (496, " a", -3.4)])]}}],
         "object": "text_completion", "timings": {"prompt_n": 6}},
        {"choices": [{"text": ".", "index": 0, "finish_reason": None, "logprobs": {"content": [
            entry(236761, ".", -0.7, [(236764, ",", -0.6), (236761, ".", -0.7)])]}}]},
        {"choices": [{"text": "", "index": 0, "finish_reason": "length", "logprobs": None}]},
    ]
    steps, fin = run(make(streaming_handler(chunks)))
    assert [s.token_id for s in steps] == [9079, 236761]
    assert [a.id for a in steps[0].top] == [9079, 506, 496] and steps[1].rank == 2
    assert fin.text == " Paris." and fin.reason == "length"


def test_llama_cpp_native_shapes():
    new = {"content": " Paris", "completion_probabilities": [{
        "id": 9079, "token": " Paris", "bytes": [32, 80, 97, 114, 105, 115], "logprob": -0.3,
        "top_logprobs": [{"id": 9079, "token": " Paris", "bytes": [32, 80, 97, 114, 105, 115], "logprob": -0.3},
                         {"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -1.6}]}]}
    (t,) = parse_logprobs(new)
    assert (t.id, t.text, t.logprob, [a.id for a in t.top]) == (9079, " Paris", -0.3, [9079, 506])
    post = {"completion_probabilities": [{"id": 1, "token": "A", "bytes": [65], "prob": 0.5,
                                          "top_probs": [{"id": 1, "token": "A", "bytes": [65], "prob": 0.5},
                                                        {"id": 2, "token": "B", "bytes": [66], "prob": 0.0}]}]}
    (t,) = parse_logprobs(post)
    assert t.logprob == pytest.approx(math.log(0.5)) and t.top[1].logprob == float("-inf")
    old = {"content": "B", "completion_probabilities": [
        {"content": "B", "probs": [{"tok_str": "B", "prob": 0.44}, {"tok_str": "C", "prob": 0.37}]}]}
    (t,) = parse_logprobs(old)
    assert t.text == "B" and t.logprob == pytest.approx(math.log(0.44)) and [a.text for a in t.top] == ["B", "C"]
    readme = {"probs": [{"id": 5, "token": "x", "logprob": -0.1, "top_logprobs": []}]}
    assert parse_logprobs(readme)[0].id == 5
    # lowest float for p = 0 (the C++ server avoids -inf that way)
    (t,) = parse_logprobs([{"id": 3, "token": "z", "logprob": -3.4028234663852886e38, "top_logprobs": []}])
    b = make(lambda r: httpx.Response(200, json=new | {"stop": True, "stop_type": "limit"}))
    steps, fin = run(b)
    assert steps[0].token_id == 9079 and fin.reason == "length"


def test_shapes_without_logprobs_and_broken_shapes():
    assert parse_logprobs({"choices": [{"text": "x", "logprobs": None}]}) is None
    assert parse_logprobs({"content": None, "refusal": None}) is None
    assert parse_logprobs({"content": [], "refusal": None}) == []
    with pytest.raises(ValueError):
        parse_logprobs({"tokens": "abc", "token_logprobs": [1]})
    with pytest.raises(ValueError):
        parse_logprobs({"content": [{"token": "a", "logprob": "high"}]})
    with pytest.raises(ValueError):
        parse_logprobs({"content": [{"token": "a", "logprob": -1, "bytes": [300]}]})


def test_entropy_lower_bound_is_a_bound():
    full = [0.5, 0.2, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03]
    h_true = -sum(p * math.log(p) for p in full)
    for k in range(1, len(full) + 1):
        assert entropy_lower_bound(full[:k], k) <= h_true + 1e-12
    assert entropy_lower_bound(full, len(full)) == pytest.approx(h_true)
    assert entropy_lower_bound([]) == 0.0


# ---------------------------------------------------------------------------- text only
def test_server_that_ignores_logprobs_gives_a_text_only_run():
    chunks = [{"choices": [{"text": t, "index": 0, "logprobs": None, "finish_reason": None}]}
              for t in ("Hello", " world")] + [final_chunk("length")]
    caps = ServerCapabilities(completions=True, chat=True)  # probed: no logprobs
    seen = []
    steps, fin = run(make(streaming_handler(chunks, seen), caps=caps))
    assert "logprobs" not in json.loads(seen[0].content)
    assert [s.token for s in steps] == ["Hello", " world"]
    for s in steps:
        assert is_text_only(s) and s.top == () and s.p_raw == 0.0 and s.p_final == 0.0
        assert s.unseen_mass == 1.0 and s.rank == 0 and s.entropy_raw == 0.0
        assert not any(math.isnan(v) for v in (s.p_raw, s.p_final, s.entropy_raw, s.unseen_mass))
    assert TEXT_ONLY_NOTE in fin.message and fin.text == "Hello world"


def test_stream_without_logprobs_falls_back_to_one_non_streamed_request():
    calls = []

    def handler(request):
        body = json.loads(request.content)
        calls.append(body["stream"])
        if body["stream"]:  # streams text but drops the logprobs (as some servers do)
            return sse_response(sse({"choices": [{"text": " the", "index": 0, "logprobs": None}]},
                                    final_chunk("length")))
        return httpx.Response(200, json={"choices": [{"text": " the", "index": 0, "finish_reason": "length",
                                                      "logprobs": {"tokens": [" the"], "token_logprobs": [-0.5],
                                                                   "top_logprobs": [{" the": -0.5}]}}]})

    b = make(handler)
    steps, fin = run(b)
    assert calls == [True, False] and steps[0].p_raw == pytest.approx(math.exp(-0.5))
    assert "all at once" in fin.message
    run(b)
    assert calls == [True, False, False]  # remembered: no streaming attempt the next time


def test_server_ignoring_logprobs_without_a_probe_is_asked_once_then_streamed_text_only():
    calls = []

    def handler(request):
        body = json.loads(request.content)
        calls.append(("logprobs" in body, body["stream"]))
        if body["stream"]:
            return sse_response(sse(*[{"choices": [{"text": t, "index": 0}]} for t in ("a", "b")],
                                    final_chunk("length")))
        return httpx.Response(200, json={"choices": [{"text": "ab", "index": 0, "finish_reason": "length"}]})

    b = make(handler)
    steps, fin = run(b)
    assert [s.token for s in steps] == ["ab"] and TEXT_ONLY_NOTE in fin.message
    steps, fin = run(b)
    assert [s.token for s in steps] == ["a", "b"] and calls[-1] == (False, True)


# ---------------------------------------------------------------------------- listing
def test_list_models_shapes():
    b = make(lambda r: httpx.Response(200, json={"object": "list", "data": [{"id": "a"}, {"id": "b"}]}))
    assert b.list_models() == ["a", "b"]
    b = make(lambda r: httpx.Response(200, json={"models": [{"name": "llama3:8b"}]}))
    assert b.list_models() == ["llama3:8b"]


def test_base_url_gets_v1_and_bad_urls_are_refused():
    seen = []
    b = OpenAICompatBackend("http://h:1", transport=httpx.MockTransport(
        lambda r: seen.append(str(r.url)) or httpx.Response(200, json={"data": []})))
    b.list_models()
    assert seen == ["http://h:1/v1/models"]
    with pytest.raises(ConnectionFailed):
        OpenAICompatBackend("ftp://h/v1")


# ---------------------------------------------------------------------------- faults
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_real_socket():
    b = OpenAICompatBackend(f"http://127.0.0.1:{_free_port()}/v1", "m", connect_timeout=2)
    with pytest.raises(ConnectionRefused, match="connection refused"):
        b.list_models()
    with pytest.raises(ConnectionRefused):
        next(iter(b.stream("x", GREEDY)))


def test_connection_refused_mock():
    def handler(request):
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise httpx.ConnectError("[Errno 111] Connection refused") from exc

    with pytest.raises(ConnectionRefused, match="llm.example:8000"):
        make(handler).list_models()


def test_unknown_host():
    def handler(request):
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as exc:
            raise httpx.ConnectError("[Errno -2] Name or service not known") from exc

    with pytest.raises(HostNotFound, match="'llm.example' could not be found"):
        run(make(handler))


def test_tls_failure_real_socket():
    """https:// to a server that speaks plain HTTP: the handshake fails."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        try:
            conn, _ = srv.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        b = OpenAICompatBackend(f"https://127.0.0.1:{srv.getsockname()[1]}/v1", "m", connect_timeout=2)
        with pytest.raises(TLSFailed, match="http://"):
            b.list_models()
    finally:
        srv.close()
        t.join(2)


def test_tls_failure_mock():
    def handler(request):
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed: self-signed certificate")
        except ssl.SSLError as exc:
            raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed") from exc

    with pytest.raises(TLSFailed, match="certificate"):
        make(handler).list_models()


def test_connect_timeout():
    def handler(request):
        raise httpx.ConnectTimeout("timed out")

    b = make(handler, connect_timeout=1.5)
    with pytest.raises(ConnectTimeout, match="within 1.5 s"):
        run(b)


def test_read_timeout_before_the_answer_is_configurable():
    def handler(request):
        raise httpx.ReadTimeout("timed out")

    b = make(handler, read_timeout=7.5)
    assert b._client.timeout.read == 7.5 and b._client.timeout.connect == 5.0
    with pytest.raises(ReadTimeout, match="nothing for 7.5 s"):
        run(b)


def test_read_timeout_real_silent_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        b = OpenAICompatBackend(f"http://127.0.0.1:{srv.getsockname()[1]}/v1", "m", read_timeout=0.2)
        t0 = time.perf_counter()
        with pytest.raises(ReadTimeout):
            b.list_models()
        assert time.perf_counter() - t0 < 2.0
    finally:
        srv.close()


def test_read_timeout_mid_stream_keeps_the_tokens():
    def body():
        yield sse(*LLAMA_CPP_PYTHON_STREAM[:2], done=False)
        raise httpx.ReadTimeout("timed out")

    got = []
    with pytest.raises(ReadTimeout, match="2 token"):
        for item in make(lambda r: sse_response(body())).stream("x", GREEDY):
            got.append(item)
    assert [s.token for s in got] == [" the", " capital"]


def test_401_without_and_with_a_key_and_403():
    def handler(request):
        return httpx.Response(401, json={"error": {"message": f"Incorrect API key provided: {KEY}"}})

    with pytest.raises(AuthenticationFailed, match="none was sent") as e1:
        make(handler, key=None).list_models()
    with pytest.raises(AuthenticationFailed, match="refused the API key") as e2:
        run(make(handler))
    assert e2.value.status == 401 and KEY not in str(e2.value)
    with pytest.raises(AuthenticationFailed, match="403"):
        make(lambda r: httpx.Response(403, json={"error": "forbidden"})).list_models()
    assert "Authorization" not in repr(e1.value)


def test_404_model_or_endpoint():
    def model_missing(request):
        return httpx.Response(404, json={"error": {"message": "The model `m` does not exist.",
                                                   "code": "model_not_found"}})

    with pytest.raises(ModelNotFound, match="does not know the model 'm'"):
        run(make(model_missing))
    with pytest.raises(EndpointNotFound, match="/v1/completions"):
        run(make(lambda r: httpx.Response(404, json={"detail": "Not Found"})))
    with pytest.raises(EndpointNotFound, match="/v1/models"):
        make(lambda r: httpx.Response(404, text="404 page not found")).list_models()


def _flaky(statuses, headers=None, then=None):
    """Answer with each status in turn, then with ``then`` (a streamed success)."""
    seq = list(statuses)
    count = {"n": 0}

    def handler(request):
        count["n"] += 1
        if seq:
            status = seq.pop(0)
            return httpx.Response(status, headers=headers or {}, json={"error": {"message": "busy"}})
        return then or sse_response(sse(*LLAMA_CPP_PYTHON_STREAM))

    return handler, count


def test_429_honours_retry_after_seconds_with_a_countdown():
    handler, count = _flaky([429, 429], headers={"Retry-After": "3"})
    sleeps = Sleeps()
    waits = []
    steps, fin = run(make(handler, sleep=sleeps), on_wait=lambda left, why: waits.append((left, why)))
    assert count["n"] == 3 and len(steps) == 3 and fin.reason == "length"
    assert sleeps.calls == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # 3 s twice, a second at a time
    lefts = [w for w, _ in waits]
    assert lefts == [3.0, 2.0, 1.0, 0.0, 3.0, 2.0, 1.0, 0.0]
    assert "429" in waits[0][1] and "attempt 2 of 4" in waits[0][1]


def test_429_with_an_http_date():
    when = email.utils.formatdate(time.time() + 2.4, usegmt=True)
    handler, count = _flaky([429], headers={"Retry-After": when})
    sleeps = Sleeps()
    run(make(handler, sleep=sleeps))
    assert count["n"] == 2 and 1.0 <= sleeps.total <= 3.5


def test_429_without_retry_after_backs_off_exponentially_with_jitter():
    handler, count = _flaky([429, 429, 429])
    sleeps = Sleeps()
    run(make(handler, sleep=sleeps, rng=lambda: 1.0))  # jitter factor 0.5 + 0.5 * rng
    assert count["n"] == 4 and sleeps.total == pytest.approx(1 + 2 + 4)
    handler, _ = _flaky([429])
    sleeps = Sleeps()
    run(make(handler, sleep=sleeps, rng=lambda: 0.0))
    assert sleeps.total == pytest.approx(0.5)


def test_429_retries_are_bounded():
    handler, count = _flaky([429] * 10, headers={"Retry-After": "1"})
    with pytest.raises(RateLimited, match="4 attempt") as e:
        run(make(handler, max_retries=3))
    assert count["n"] == 4 and e.value.status == 429


def test_429_asking_for_too_long_a_wait_fails_at_once():
    handler, count = _flaky([429], headers={"Retry-After": "3600"})
    sleeps = Sleeps()
    with pytest.raises(RateLimited, match="3600 s") as e:
        run(make(handler, sleep=sleeps))
    assert count["n"] == 1 and sleeps.calls == [] and e.value.retry_after == 3600


def test_5xx_is_retried_then_reported():
    handler, count = _flaky([503, 502])
    steps, _ = run(make(handler))
    assert count["n"] == 3 and len(steps) == 3
    handler, count = _flaky([500] * 10)
    with pytest.raises(ServerFailed, match="HTTP 500: busy") as e:
        run(make(handler, max_retries=2))
    assert count["n"] == 3 and e.value.status == 500
    handler, count = _flaky([501])
    with pytest.raises(ServerFailed):
        run(make(handler))
    assert count["n"] == 1  # "not implemented" is not retried


def test_other_4xx_is_reported_with_the_servers_reason():
    h = lambda r: httpx.Response(400, json={"error": {"message": "max_tokens is too large"}})  # noqa: E731
    with pytest.raises(RequestRejected, match="max_tokens is too large"):
        run(make(h))


def test_unprobed_server_with_a_smaller_top_n_cap():
    seen = []

    def handler(request):
        n = json.loads(request.content).get("logprobs")
        seen.append(n)
        if n > 5:
            return httpx.Response(400, json={"error": {"message": "logprobs must be at most 5"}})
        return sse_response(sse(*LLAMA_CPP_PYTHON_STREAM))

    steps, _ = run(make(handler), settings=GREEDY.replace(top_n=20))
    assert seen == [20, 5] and len(steps) == 3


def test_body_that_is_not_json():
    html = "<html><body>Welcome to nginx</body></html>"
    with pytest.raises(BadResponse, match="not JSON.*nginx"):
        make(lambda r: httpx.Response(200, text=html, headers={"content-type": "text/html"})).list_models()
    with pytest.raises(BadResponse, match="not JSON"):
        run(make(lambda r: httpx.Response(200, text=html, headers={"content-type": "text/html"})))


def test_stream_cut_midway_is_incomplete_and_keeps_the_tokens():
    # the body simply ends: no finish_reason, no [DONE]
    b = make(lambda r: sse_response(sse(*LLAMA_CPP_PYTHON_STREAM[:2], done=False)))
    steps, fin = run(b)
    assert len(steps) == 2 and fin.reason == "incomplete" and fin.n_tokens == 2
    assert "cut after 2 token" in fin.message and fin.text == " the capital"

    def broken():
        yield sse(*LLAMA_CPP_PYTHON_STREAM[:1], done=False)
        yield b'data: {"choices": [{"text": " cap'  # half an event, then the connection drops
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    steps, fin = run(make(lambda r: sse_response(broken())))
    assert len(steps) == 1 and fin.reason == "incomplete" and "peer closed" in fin.message

    def half_event():
        yield sse(*LLAMA_CPP_PYTHON_STREAM[:1], done=False) + b'data: {"choices": [{"te'

    steps, fin = run(make(lambda r: sse_response(half_event())))
    assert len(steps) == 1 and fin.reason == "incomplete" and "only in part" in fin.message


def test_finish_reason_without_done_is_complete():
    steps, fin = run(make(lambda r: sse_response(sse(*LLAMA_CPP_PYTHON_STREAM, done=False))))
    assert fin.reason == "length" and len(steps) == 3


def test_malformed_chunks():
    body = sse(*LLAMA_CPP_PYTHON_STREAM[:1], done=False) + b"data: {not json}\n\n"
    got = []
    with pytest.raises(BadResponse, match="malformed event") as e:
        for item in make(lambda r: sse_response(body)).stream("x", GREEDY):
            got.append(item)
    assert len(got) == 1 and "not JSON" in str(e.value)
    with pytest.raises(BadResponse, match="cannot read"):
        run(make(lambda r: sse_response(sse({"choices": {"text": "x"}}))))
    bad_lp = {"choices": [{"text": "x", "index": 0, "logprobs": {"tokens": ["x"], "token_logprobs": ["?"]}}]}
    with pytest.raises(BadResponse, match="cannot read"):
        run(make(lambda r: sse_response(sse(bad_lp))))


def test_events_without_blank_lines_between_them_are_still_read():
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n" for c in LLAMA_CPP_PYTHON_STREAM) + b"\n"
    steps, fin = run(make(lambda r: sse_response(body)))
    assert len(steps) == 3 and fin.reason == "length"


def test_error_object_in_the_middle_of_the_stream():
    body = sse(LLAMA_CPP_PYTHON_STREAM[0], {"error": {"message": "CUDA out of memory", "code": 500}}, done=False)
    got = []
    with pytest.raises(ServerFailed, match="CUDA out of memory.*1 token"):
        for item in make(lambda r: sse_response(body)).stream("x", GREEDY):
            got.append(item)
    assert len(got) == 1


def test_sampler_fields_are_sent_only_where_accepted():
    seen = []
    caps = ServerCapabilities(completions=True, completions_logprobs=True, top_n_max=20, top_n_completions=20,
                              stream_logprobs=True, accepted=frozenset({"top_k", "min_p", "repeat_penalty", "seed"}))
    s = GREEDY.replace(top_k=0, min_p=0.1, repeat_penalty=1.2, top_n=50, stop=("\n",))
    run(make(streaming_handler(LLAMA_CPP_PYTHON_STREAM, seen), caps=caps), settings=s)
    body = json.loads(seen[0].content)
    assert body["top_k"] == 0 and body["min_p"] == 0.1 and body["repeat_penalty"] == 1.2
    assert body["logprobs"] == 20 and body["stop"] == ["\n"]
    caps = replace_caps(caps, accepted=frozenset())
    run(make(streaming_handler(LLAMA_CPP_PYTHON_STREAM, seen), caps=caps), settings=s)
    body = json.loads(seen[1].content)
    assert not {"top_k", "min_p", "repeat_penalty", "seed"} & set(body)
    run(make(streaming_handler(LLAMA_CPP_PYTHON_STREAM, seen), caps=caps, send_sampler_fields=True), settings=s)
    assert {"top_k", "min_p", "repeat_penalty"} <= set(json.loads(seen[2].content))


def replace_caps(caps, **kw):
    import dataclasses

    return dataclasses.replace(caps, **kw)


def test_stop_reason_with_stop_strings():
    chunks = LLAMA_CPP_PYTHON_STREAM[:1] + [final_chunk("stop")]
    _, fin = run(make(streaming_handler(chunks)), settings=GREEDY.replace(stop=("\n",)))
    assert fin.reason == "stop"


# ---------------------------------------------------------------------------- probe
def test_probe_against_an_openai_like_server():
    """Chat logprobs up to 20, legacy completions capped at 5, top_k/min_p/repeat_penalty
    refused, seed accepted but not reproducible, json_schema supported."""
    state = {"sample": 0}

    def handler(request):
        body = json.loads(request.content)
        for f in ("top_k", "min_p", "repeat_penalty"):
            if f in body:
                return httpx.Response(400, json={"error": {"message": f"Unrecognized request argument supplied: {f}"}})
        chat = request.url.path.endswith("/chat/completions")
        if chat:
            n = body.get("top_logprobs", 0)
            if n > 20:
                return httpx.Response(400, json={"error": {"message": "top_logprobs too large"}})
            fmt = body.get("response_format")
            text = '{"a": 1}' if fmt and fmt["type"] == "json_schema" else "Paris"
            lp = {"content": [{"token": "Paris", "logprob": -0.1, "bytes": list(b"Paris"),
                               "top_logprobs": [{"token": f"t{i}", "logprob": -1.0 - i, "bytes": None}
                                                for i in range(n)]}]} if body.get("logprobs") else None
            if body.get("stream"):
                return sse_response(sse({"choices": [{"index": 0, "delta": {"content": text}, "logprobs": lp}]},
                                        final_chunk("stop", chat=True)))
            return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                          "logprobs": lp, "finish_reason": "stop"}]})
        n = body.get("logprobs") or 0
        if n > 5:
            return httpx.Response(400, json={"error": {"message": "logprobs must be <= 5"}})
        temp = body.get("temperature", 1)
        state["sample"] += 1
        text = " Paris" if temp == 0 else f" sample{state['sample']}"
        lp = {"tokens": [" Paris"], "token_logprobs": [-0.1], "top_logprobs": [{f"t{i}": -1.0 - i for i in range(n)}],
              "text_offset": [0]} if n else None
        if body.get("stream"):  # streams without logprobs
            return sse_response(sse({"choices": [{"text": text, "index": 0, "logprobs": None}]}, final_chunk()))
        return httpx.Response(200, json={"choices": [{"text": text, "index": 0, "logprobs": lp,
                                                      "finish_reason": "length"}]})

    b = make(handler)
    caps = b.probe("m")
    assert caps.completions and caps.completions_logprobs and caps.top_n_completions == 5
    assert caps.chat and caps.chat_logprobs and caps.top_n_chat == 20 and caps.top_n_max == 20
    assert not caps.stream_logprobs
    assert not caps.top_k and not caps.min_p and not caps.repeat_penalty
    assert caps.accepted == frozenset({"seed"}) and not caps.seed
    assert caps.json_schema and caps.json_schema_style == "json_schema"
    assert any("do not stream" in n for n in caps.notes)
    # echo is ignored (only the generated token comes back): no prompt X-ray, and the reason is noted
    assert not caps.echo_logprobs and any("echoed prompt" in n for n in caps.notes)
    c = b.capabilities
    assert (c.full_logits, c.sampler_stages, c.step_mode, c.top_n_max, c.seed) == (False, False, False, 20, False)
    assert not c.prompt_logprobs and "echoed prompt" in c.why_not("prompt_logprobs")
    with pytest.raises(GenerationError, match="echoed prompt"):
        b.score_prompt("The capital of France is")


def test_probe_of_a_completion_only_server_without_logprobs():
    def handler(request):
        if request.url.path.endswith("/chat/completions"):
            return httpx.Response(404, json={"detail": "Not Found"})
        body = json.loads(request.content)
        text = " x" if body.get("temperature") == 0 or body.get("top_k") == 1 or body.get("min_p") == 1.0 else " y"
        if body.get("seed") == 1234:
            text = " seeded"
        return httpx.Response(200, json={"choices": [{"text": text, "index": 0, "logprobs": None,
                                                      "finish_reason": "length"}]})

    caps = make(handler).probe("m")
    assert caps.completions and not caps.completions_logprobs and not caps.chat
    assert caps.top_n_max == 0 and caps.seed and caps.top_k and caps.min_p and caps.repeat_penalty
    assert not caps.json_schema
    assert any("text only" in n for n in caps.notes)


def test_probe_finds_how_an_older_vllm_switches_top_k_off():
    def handler(request):
        body = json.loads(request.content)
        if body.get("top_k") == 0:
            return httpx.Response(400, json={"object": "error", "message": "top_k must be -1 (disable), or at least 1, got 0."})
        return httpx.Response(200, json={"choices": [{"text": " x", "index": 0, "finish_reason": "length",
                                                      "logprobs": None}]})

    seen = []
    b = make(handler)
    caps = b.probe("m")
    assert caps.top_k and caps.top_k_off == -1
    b._client._transport = httpx.MockTransport(streaming_handler(LLAMA_CPP_PYTHON_STREAM, seen))
    run(b, settings=GREEDY.replace(top_k=0))
    assert json.loads(seen[0].content)["top_k"] == -1


def test_probe_stops_on_a_wrong_key():
    with pytest.raises(AuthenticationFailed):
        make(lambda r: httpx.Response(401, json={})).probe("m")


# ---------------------------------------------------------------------------- cancellation
def test_stop_takes_effect_within_200_ms_on_a_silent_stream():
    release = threading.Event()

    def slow():
        yield sse(*LLAMA_CPP_PYTHON_STREAM[:1], done=False)
        release.wait(10)  # the server computes the next token... for a long time
        yield sse(*LLAMA_CPP_PYTHON_STREAM[1:])

    cancel = threading.Event()
    gen = make(lambda r: sse_response(slow())).stream("x", GREEDY, cancel=cancel)
    first = next(gen)
    assert isinstance(first, Step)
    t0 = time.perf_counter()
    cancel.set()
    fin = next(gen)
    elapsed = time.perf_counter() - t0
    release.set()
    assert isinstance(fin, Finished) and fin.reason == "cancelled" and fin.n_tokens == 1
    assert fin.text == " the" and elapsed < 0.2
    with pytest.raises(StopIteration):
        next(gen)


def test_stop_while_waiting_for_an_answer_and_during_a_retry_wait():
    release = threading.Event()

    def handler(request):
        release.wait(10)  # a non-streaming request the server takes long to answer
        return httpx.Response(200, json={})

    cancel = threading.Event()
    gen = make(handler).stream("x", GREEDY, cancel=cancel)
    timer = threading.Timer(0.05, cancel.set)
    timer.start()
    t0 = time.perf_counter()
    fin = next(gen)
    release.set()
    assert fin.reason == "cancelled" and time.perf_counter() - t0 < 0.5

    handler, count = _flaky([429], headers={"Retry-After": "30"})
    cancel = threading.Event()
    sleeps = Sleeps()
    items = list(make(handler, sleep=sleeps).stream(
        "x", GREEDY, cancel=cancel, on_wait=lambda left, why: cancel.set() if left < 29 else None))
    assert [type(i) for i in items] == [Finished] and items[0].reason == "cancelled"
    assert count["n"] == 1 and len(sleeps.calls) == 2


def test_closing_the_generator_stops_the_request():
    release = threading.Event()

    def slow():
        yield sse(*LLAMA_CPP_PYTHON_STREAM[:1], done=False)
        release.wait(10)
        yield b""

    gen = make(lambda r: sse_response(slow())).stream("x", GREEDY)
    assert isinstance(next(gen), Step)
    t0 = time.perf_counter()
    gen.close()
    assert time.perf_counter() - t0 < 0.2
    release.set()


# ---------------------------------------------------------------------------- the key
def test_the_api_key_never_leaks(caplog):
    caplog.set_level(logging.DEBUG)
    b = make(lambda r: httpx.Response(200, json={"data": []}))
    assert KEY not in repr(b) and KEY not in str(b) and "api_key=set" in repr(b)
    assert KEY not in repr(vars(b)) and KEY not in repr(b._secret)
    echo = {"error": {"message": f"bad key {KEY} for Bearer {KEY}"}}

    def transport_fail(request):
        raise httpx.ConnectError(f"failed with headers {request.headers['authorization']}")

    handlers = [
        lambda r: httpx.Response(401, json=echo),
        lambda r: httpx.Response(403, json=echo),
        lambda r: httpx.Response(404, json=echo),
        lambda r: httpx.Response(400, json=echo),
        lambda r: httpx.Response(500, json=echo),
        lambda r: httpx.Response(429, json=echo),
        lambda r: httpx.Response(200, text=f"<html>{KEY}</html>"),
        lambda r: sse_response(f"data: {{broken {KEY}\n\n".encode()),
        lambda r: sse_response(sse({"error": {"message": f"oops {KEY}"}})),
        transport_fail,
    ]
    errors, returned = [], []
    for h in handlers:
        for call in (lambda bk: bk.list_models(), lambda bk: run(bk), lambda bk: bk.probe("m")):
            try:
                returned.append(call(make(h)))  # e.g. the probe notes what the server refused
            except BackendError as exc:
                errors.append(exc)
    assert len(errors) >= 20 and len(errors) + len(returned) == 30
    assert KEY not in repr(returned)
    for exc in errors:
        text = str(exc) + repr(exc) + "".join(traceback.format_exception(exc))
        assert KEY not in text, text
        # nothing chained that could carry the request headers
        e = exc.__cause__ or exc.__context__
        while e is not None:
            assert not isinstance(e, httpx.HTTPError), repr(e)
            e = e.__cause__ or e.__context__
    steps, fin = run(make(streaming_handler(LLAMA_CPP_PYTHON_STREAM)))
    assert KEY not in repr(steps) + repr(fin)
    assert KEY not in caplog.text


def test_a_429_pauses_the_other_concurrent_requests_too():
    """N-sample work sends requests from several threads at once: a 429 with Retry-After seen by
    one makes the others wait for it before they send (one shared back-off), while the one that
    got it waits only its own Retry-After."""
    calls = []

    def handler(request):
        calls.append(threading.get_ident())
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "60"}, json={"error": {"message": "slow down"}})
        return httpx.Response(200, json={"object": "list", "data": [{"id": "m"}]})

    sleeps = Sleeps()
    b = OpenAICompatBackend(URL, "m", transport=httpx.MockTransport(handler), sleep=sleeps)
    assert b.list_models() == ["m"]
    assert sum(sleeps.calls) == pytest.approx(60.0)  # its own Retry-After, once (the test sleeps are instant)
    other: list[float] = []
    t = threading.Thread(target=lambda: (other.append(len(sleeps.calls)), b.list_models(),
                                         other.append(len(sleeps.calls))))
    t.start()
    t.join(10)
    assert other[1] > other[0]  # the other thread waited for the shared pause before sending


def test_an_empty_event_stream_where_json_was_expected_is_a_bad_answer():
    """A 200 with an event-stream content type and no body: the user's sentence, not a TypeError."""
    def handler(request):
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"")

    with pytest.raises(BadResponse, match="not JSON"):
        make(handler).list_models()


# ---------------------------------------------------------------------------- echoed prompt logprobs
def _echo_answer(text: str, tokens: list[str], lps: list) -> dict:
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {"choices": [{"text": text, "index": 0, "finish_reason": "length", "logprobs": {
        "tokens": tokens, "token_logprobs": lps, "text_offset": offsets,
        "top_logprobs": [None if lp is None else {t: lp, " x": -3.0} for t, lp in zip(tokens, lps)]}}]}


def _echoing_server(answer_for):
    """A completion-only server with logprobs whose echo answers come from ``answer_for(prompt)``."""
    def handler(request):
        body = json.loads(request.content)
        if request.url.path.endswith("/chat/completions"):
            return httpx.Response(404, json={"error": {"message": "no chat"}})
        if body.get("echo"):
            return httpx.Response(200, json=answer_for(body["prompt"]))
        n = body.get("logprobs") or 0
        lp = {"tokens": [" Paris"], "token_logprobs": [-0.1], "top_logprobs": [{f"t{i}": -1.0 - i for i in range(n)}],
              "text_offset": [0]} if n else None
        if body.get("stream"):
            return sse_response(sse({"choices": [{"text": " Paris", "index": 0, "logprobs": lp}]}, final_chunk()))
        return httpx.Response(200, json={"choices": [{"text": " Paris", "index": 0, "logprobs": lp,
                                                      "finish_reason": "length"}]})
    return handler


def test_echoed_prompt_logprobs_are_read_and_a_lying_echo_is_refused():
    from backends.openai_compat import PROBE_PROMPT

    def honest(prompt):
        words = re.findall(r" ?\S+", prompt)  # "The", " capital", ...
        return _echo_answer(prompt + " Paris", words + [" Paris"], [None] + [-1.5] * (len(words) - 1) + [-0.2])

    b = make(_echoing_server(honest))
    caps = b.probe("m")
    assert caps.echo_logprobs and b.capabilities.prompt_logprobs
    toks = b.score_prompt("Roses are red")
    assert [t.token.text for t in toks] == ["Roses", " are", " red"]  # the generated " Paris" left out
    assert [t.offset for t in toks] == [0, 5, 9] and toks[0].token.logprob is None and toks[1].token.logprob == -1.5

    from app.core.scoring import score_remote

    res = score_remote(b, "Roses are", " red")
    assert [t.continuation for t in res.tokens] == [False, False, True] and res.n_scored == 1
    assert res.perplexity == pytest.approx(math.exp(1.5))
    assert res.tokens[1].rank == 1 and res.tokens[1].estimated
    steps = res.steps()  # the X-ray's trace: the scored tokens as estimated Steps
    assert [s.token for s in steps] == [" are", " red"] and all(s.estimated and s.rank == 1 for s in steps)
    assert steps[0].p_raw == pytest.approx(math.exp(-1.5)) and steps[0].top[0].token == " are"

    # a server that echoes something else than the prompt, or garbage, is caught
    state = {"lie": None}

    def liar(prompt):
        if prompt == PROBE_PROMPT or state["lie"] is None:
            return honest(prompt)
        return state["lie"]

    b = make(_echoing_server(liar))
    assert b.probe("m").echo_logprobs
    state["lie"] = _echo_answer("Something else entirely", ["Something", " else", " entirely"], [None, -1.0, -1.0])
    with pytest.raises(BadResponse, match="did not echo"):
        b.score_prompt("Roses are red")
    state["lie"] = {"choices": [{"text": "x", "logprobs": {"tokens": [1, 2], "token_logprobs": [None, -1.0]}}]}
    with pytest.raises(BadResponse, match="malformed"):
        b.score_prompt("Roses are red")
