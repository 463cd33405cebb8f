"""OpenAICompatBackend against a real OpenAI-compatible server: llama-cpp-python's server on
the embedded Gemma 3 270M, started by the ``llama_server`` fixture (tests/server_fixture.py).

What this server does, as observed (llama-cpp-python 0.3.36):

- completions stream their logprobs in the OpenAI legacy lists, one token per chunk, without
  token ids or bytes; ``top_logprobs`` is a dict keyed by token text (tokens with the same text
  merge) and the chosen token is added when it is outside the top-N;
- the GGUF has no chat template, so chat uses the server's fallback "llama-2" format; a plain
  question is answered with an immediate end of sequence (no token at all), while a sentence to
  complete is continued, with chat-shaped logprobs (``content[]``, ``bytes`` null, no ids);
- every logprob token costs the server a Python sort of the 262,144-entry vocabulary (about
  0.2-0.5 s on 2 cores), so these tests keep generations short.
"""

from __future__ import annotations

import math
import threading
import time

import httpx
import pytest

from app.core.session import GenerationSession
from backends.base import Finished, SamplerSettings, Step
from backends.openai_compat import TEXT_ONLY_NOTE, is_text_only

PROMPT = "The capital of France is"


def collect(gen) -> tuple[list[Step], Finished]:
    steps, fin = [], None
    for item in gen:
        if isinstance(item, Step):
            steps.append(item)
        else:
            fin = item
    assert fin is not None
    return steps, fin


def test_model_listing(remote, llama_server):
    assert remote.list_models() == [llama_server.model]


def test_probe_results(remote):
    caps = remote.server_capabilities()
    assert caps.completions and caps.completions_logprobs and caps.top_n_completions == 20
    assert caps.chat and caps.chat_logprobs and caps.top_n_max == 20
    assert caps.stream_logprobs
    # llama-cpp-python honours per-request seed, top_k and min_p (behavioural checks passed)
    assert caps.seed and caps.top_k and caps.min_p and caps.repeat_penalty
    assert caps.accepted == frozenset({"seed", "top_k", "min_p", "repeat_penalty"})
    # it refuses OpenAI's json_schema response format (HTTP 500, a validation error) but reads a
    # schema inside {"type": "json_object"}
    assert caps.json_schema and caps.json_schema_style == "json_object"
    # with --logits_all it echoes a prompt's tokens with their log-probabilities (the prompt X-ray)
    assert caps.echo_logprobs and remote.capabilities.prompt_logprobs
    c = remote.capabilities
    assert (c.full_logits, c.sampler_stages, c.step_mode, c.top_n_max, c.seed) == (False, False, False, 20, True)


def test_streaming_completion_with_logprobs(remote):
    s = SamplerSettings(temperature=0.0, max_tokens=4, top_n=5)
    arrivals = []
    steps, fin = [], None
    for item in remote.stream(PROMPT, s):
        arrivals.append(time.perf_counter())
        if isinstance(item, Step):
            steps.append(item)
        else:
            fin = item
    assert fin.reason == "length" and fin.n_tokens == 4 == len(steps)
    assert fin.text == "".join(st.token for st in steps) and fin.message == ""
    for i, st in enumerate(steps):
        assert st.index == i and st.estimated and st.token_id is None and not is_text_only(st)
        assert 0.0 < st.p_raw <= 1.0 and st.p_raw == st.p_final and st.rank == 1  # greedy
        assert 5 <= len(st.top) <= 6 and st.top[0].p_raw == pytest.approx(st.p_raw)
        ps = [a.p_raw for a in st.top]
        assert ps == sorted(ps, reverse=True)
        assert st.unseen_mass == pytest.approx(1 - sum(ps)) and 0.0 <= st.unseen_mass < 1.0
        assert st.entropy_raw >= -sum(p * math.log(p) for p in ps) - 1e-12
    # streamed: the steps did not all arrive at once at the end
    assert arrivals[-1] - arrivals[0] > 0.05


def test_chat(remote):
    s = SamplerSettings(temperature=0.0, max_tokens=3, top_n=4)
    steps, fin = collect(remote.stream(None, s, messages=[{"role": "user", "content": PROMPT}]))
    assert [st.token for st in steps] == [" Paris", ".", " It"]
    assert fin.reason == "length" and fin.text == " Paris. It"
    assert all(4 <= len(st.top) <= 5 and st.rank == 1 and 0 < st.p_raw < 1 for st in steps)
    # a question gets an immediate end of sequence with the fallback chat format: no tokens
    steps, fin = collect(remote.stream(None, s, messages=[{"role": "user", "content": "Say hello."}]))
    assert steps == [] and fin.reason == "eos" and fin.text == "" and TEXT_ONLY_NOTE not in fin.message


def test_sampling_with_a_seed_is_reproducible(remote):
    s = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, max_tokens=3, top_n=1, seed=99)
    a, _ = collect(remote.stream("Once upon a time", s))
    b, _ = collect(remote.stream("Once upon a time", s))
    assert [x.token for x in a] == [x.token for x in b]


def test_cancellation_within_200_ms(remote):
    s = SamplerSettings(temperature=0.0, max_tokens=64, top_n=5)
    cancel = threading.Event()
    gen = remote.stream("Write a long story about a dragon.", s, cancel=cancel)
    first = next(gen)
    assert isinstance(first, Step)
    t0 = time.perf_counter()
    cancel.set()
    fin = next(gen)
    elapsed = time.perf_counter() - t0
    assert isinstance(fin, Finished) and fin.reason == "cancelled" and 1 <= fin.n_tokens < 64
    assert elapsed < 0.2, elapsed
    # the server is still usable afterwards
    steps, fin = collect(remote.stream(PROMPT, SamplerSettings(temperature=0.0, max_tokens=1, top_n=1)))
    assert len(steps) == 1 and fin.reason == "length"


def test_greedy_through_the_server_matches_the_local_backend(remote, local_backend, llama_server):
    """Same tokens, and the top-N probabilities within 1e-3 (measured: about 1e-8).

    llama.cpp's results depend on how the prompt is batched when flash attention is on (it is
    for both here): the server evaluates a prompt after the longest prefix it still holds from
    the previous request. Both sides are made to hold exactly the BOS token first, so that both
    evaluate the rest of the prompt as one batch."""
    n = 10
    s = SamplerSettings(temperature=0.0, max_tokens=8, top_n=n, repeat_penalty=1.0)
    # the server's cache: BOS + "Hello" (shares only BOS with PROMPT)
    httpx.post(f"{llama_server.base_url}/completions", json={"prompt": "Hello", "max_tokens": 1}, timeout=60)
    remote_steps, fin = collect(remote.stream(PROMPT, s))
    assert fin.reason == "length" and len(remote_steps) == 8

    local_backend.reset()
    local_backend.prepare([local_backend.info.bos_token])
    local_steps, _ = collect(GenerationSession(local_backend, PROMPT, s).run())

    assert [st.token for st in remote_steps] == [st.token for st in local_steps]
    worst = 0.0
    for r, loc in zip(remote_steps, local_steps):
        assert r.p_raw == pytest.approx(loc.p_raw, abs=1e-3)
        ours = {a.token: a.p_raw for a in loc.top}
        theirs = {a.token: a.p_raw for a in r.top}
        unique = [a.token for a in loc.top if [b.token for b in loc.top].count(a.token) == 1]
        shared = [t for t in unique if t in theirs]
        assert len(shared) >= n - 2  # the server merges tokens with the same text
        for t in shared:
            worst = max(worst, abs(ours[t] - theirs[t]))
    assert worst < 1e-3, worst
