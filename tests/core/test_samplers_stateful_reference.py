"""DRY, Mirostat v1/v2 and adaptive-p against llama.cpp's own samplers, step after step.

The llama.cpp side goes through llama-cpp-python's ctypes declarations, each checked against
the vendored ``include/llama.h`` of 0.3.36 and against the library by these tests themselves (a
stale prototype would shift the arguments and the penalties or cuts would not match):
``dry(vocab*, float, float, int32, int32, const char**, size_t)``,
``mirostat(int32 n_vocab, uint32 seed, float tau, float eta, int32 m)``,
``mirostat_v2(uint32 seed, float tau, float eta)``, ``adaptive_p(float, float, uint32)``.

Mirostat and adaptive-p pick the token themselves in llama.cpp; each step here takes
llama.cpp's pick on both sides (ours through ``ChainResult.next_state``), so the running mu
and the moving average must follow llama.cpp's for the kept sets to keep matching.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import llama_cpp
from app.core.sampling import SamplerState, apply_chain, dry_penalties, resolve_dry_breakers
from tests.core.test_sampling_reference import OFF, TOKEN_DATA, compare, distinct


def _array(logits: np.ndarray):
    n = logits.shape[0]
    arr = np.zeros(n, dtype=TOKEN_DATA)
    arr["id"] = np.arange(n, dtype=np.int32)
    arr["logit"] = logits
    cur = llama_cpp.llama_token_data_array(
        data=arr.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), size=n, selected=-1, sorted=False)
    return arr, cur


def _dry_sampler(vocab, mult, base, allowed, last_n, breakers=()):
    c_breakers = (ctypes.c_char_p * max(1, len(breakers)))(*[b.encode("utf-8") for b in breakers])
    return llama_cpp.llama_sampler_init_dry(vocab, mult, base, allowed, last_n, c_breakers, len(breakers))


def _llama_dry(vocab, logits, history, mult, base, allowed, last_n, breakers=()) -> np.ndarray:
    smpl = _dry_sampler(vocab, mult, base, allowed, last_n, breakers)
    try:
        for t in history:
            llama_cpp.llama_sampler_accept(smpl, int(t))
        arr, cur = _array(logits)
        llama_cpp.llama_sampler_apply(smpl, ctypes.byref(cur))
        assert cur.size == logits.shape[0]
        out = np.empty_like(logits)
        out[arr["id"]] = arr["logit"]
        return out
    finally:
        llama_cpp.llama_sampler_free(smpl)


def _repetitive_history(rng: np.random.Generator, n: int, length: int) -> list[int]:
    """Tokens with repeats of every length: pieces of a few motifs, copied with small edits."""
    motifs = [rng.integers(0, n, int(rng.integers(2, 9))).tolist() for _ in range(3)]
    out: list[int] = []
    while len(out) < length:
        m = list(motifs[int(rng.integers(0, 3))])
        if rng.random() < 0.3:
            m[int(rng.integers(0, len(m)))] = int(rng.integers(0, n))
        out += m
    return out[:length]


@pytest.fixture(scope="module")
def vocab(local_backend):
    return local_backend.model._vocab


@pytest.mark.parametrize("case", range(40))
def test_dry_penalises_exactly_what_llama_cpp_does(case, vocab):
    rng = np.random.default_rng(9100 + case)
    n = int(rng.choice([20, 60, 500]))
    logits = distinct(rng.normal(0, 2, n))
    history = _repetitive_history(rng, n, int(rng.integers(5, 200)))
    mult = float(rng.choice([0.5, 0.8, 2.0]))
    base = float(rng.choice([1.0, 1.1, 1.75, 3.0]))
    allowed = int(rng.choice([0, 1, 2, 4]))
    last_n = int(rng.choice([8, 32, 64, 1000]))
    ref = _llama_dry(vocab, logits, history, mult, base, allowed, last_n)
    s = OFF.replace(samplers=("dry",), dry_multiplier=mult, dry_base=base, dry_allowed_length=allowed,
                    dry_penalty_last_n=last_n, dry_sequence_breakers=())
    pens = dry_penalties(history, mult, base, allowed, last_n)
    ours = logits.copy()
    for tok, p in pens.items():
        ours[tok] = np.float32(ours[tok] - p)
    assert np.array_equal(ours, ref), f"case {case}: {np.flatnonzero(ours != ref)[:5]}"
    r = apply_chain(logits, s, history)
    w = np.exp(ref.astype(np.float64) - ref.max())
    assert compare(r.ids, r.probs, np.arange(n), w / w.sum()) is None


def test_the_dry_cases_penalise_something():
    hits = 0
    for case in range(40):
        rng = np.random.default_rng(9100 + case)
        n = int(rng.choice([20, 60, 500]))
        rng.normal(0, 2, n)
        history = _repetitive_history(rng, n, int(rng.integers(5, 200)))
        mult, base = float(rng.choice([0.5, 0.8, 2.0])), float(rng.choice([1.0, 1.1, 1.75, 3.0]))
        allowed, last_n = int(rng.choice([0, 1, 2, 4])), int(rng.choice([8, 32, 64, 1000]))
        hits += bool(dry_penalties(history, mult, base, allowed, last_n))
    assert hits >= 25


def test_dry_sequence_breakers_on_the_real_vocabulary(local_backend, vocab):
    text = ("the cat sat on the mat, the cat sat on the mat\nName: Ann\nAge: 30\nName: Bob\nAge: 31\n"
            "Name: Cy\nAge: 32\n*Name*: \"Dee\"\nAge: 33\nName: Ed\nAge: 34\nName")
    history = local_backend.tokenize(text, add_special=False)
    local_backend.prepare(local_backend.tokenize(text))
    logits = np.array(local_backend.logits(), dtype=np.float32)
    breakers_sets = [("\n", ":", "\"", "*"), ("Age:",), ("cat sat", "\n"), ()]
    for breakers in breakers_sets:
        ref = _llama_dry(vocab, logits, history, 0.8, 1.75, 2, 200, breakers)
        resolved = resolve_dry_breakers(breakers, local_backend.vocab_bytes(),
                                        lambda t: local_backend.tokenize(t, add_special=False))
        pens = dry_penalties(history, 0.8, 1.75, 2, 200, resolved)
        ours = logits.copy()
        for tok, p in pens.items():
            ours[tok] = np.float32(ours[tok] - p)
        assert np.array_equal(ours, ref), (breakers, np.flatnonzero(ours != ref)[:5])
    # the breakers matter: without them the repeats of "Name:" are penalised, with them not all
    plain = dry_penalties(history, 0.8, 1.75, 2, 200)
    broken = dry_penalties(history, 0.8, 1.75, 2, 200, resolve_dry_breakers(
        breakers_sets[0], local_backend.vocab_bytes(), lambda t: local_backend.tokenize(t, add_special=False)))
    assert plain and plain != broken


def _steps(n_steps: int, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_steps):
        v = rng.normal(0, float(rng.choice([1.0, 2.0, 3.0])), n)
        hot = rng.choice(n, int(rng.integers(1, 6)), replace=False)
        v[hot] += rng.uniform(2, 8, hot.shape[0])
        out.append(distinct(v))
    return out


@pytest.mark.parametrize("version,n,tau,eta,temp", [
    (1, 1000, 5.0, 0.1, 1.0), (1, 262144, 3.0, 0.3, 1.0), (1, 5000, 5.0, 0.1, 0.7),
    (2, 1000, 5.0, 0.1, 1.0), (2, 262144, 3.0, 0.3, 1.0), (2, 5000, 4.0, 0.2, 1.3),
])
def test_mirostat_follows_llama_cpp_step_after_step(version, n, tau, eta, temp):
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(temp))
    if version == 1:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_mirostat(n, 77, tau, eta, 100))
    else:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_mirostat_v2(77, tau, eta))
    s = OFF.replace(temperature=temp, mirostat=version, mirostat_tau=tau, mirostat_eta=eta)
    state = SamplerState.initial(s)
    mus, sizes = [], []
    try:
        for i, v in enumerate(_steps(12, n, 500 + version * 10 + n % 7)):
            arr, cur = _array(v)
            llama_cpp.llama_sampler_apply(chain, ctypes.byref(cur))
            kept = arr[: cur.size]
            token = int(arr[cur.selected]["id"])
            lg = kept["logit"].astype(np.float64)
            w = np.exp(lg - lg.max())
            r = apply_chain(v, s, state=state)
            problem = compare(r.ids, r.probs, kept["id"].astype(np.int64), w / w.sum())
            assert problem is None, f"step {i}: {problem}"
            mus.append(r.stages[-1].value)
            sizes.append(int(cur.size))
            state = r.next_state(token)
    finally:
        llama_cpp.llama_sampler_free(chain)
    assert len(set(mus)) > 5 and mus[0] == pytest.approx(2 * tau)  # mu moves, from 2 tau
    assert len(set(sizes)) > 1  # the cut follows it


@pytest.mark.parametrize("target,decay,n", [(0.3, 0.9, 1000), (0.1, 0.5, 262144), (0.7, 0.0, 3000)])
def test_adaptive_p_follows_llama_cpp_step_after_step(target, decay, n):
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_min_p(0.02, 1))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_adaptive_p(target, decay, 99))
    s = OFF.replace(min_p=0.02, samplers=("min_p",), adaptive_target=target, adaptive_decay=decay)
    state = SamplerState.initial(s)
    targets = []
    try:
        for i, v in enumerate(_steps(12, n, 900 + n % 11)):
            arr, cur = _array(v)
            llama_cpp.llama_sampler_apply(chain, ctypes.byref(cur))
            kept = arr[: cur.size]
            token = int(arr[cur.selected]["id"])
            llama_cpp.llama_sampler_accept(chain, token)  # adaptive-p updates its average here
            lg = kept["logit"].astype(np.float64)
            w = np.exp(lg - lg.max())
            r = apply_chain(v, s, state=state)
            assert [st.name for st in r.stages] == ["min_p", "adaptive_p"]
            problem = compare(r.ids, r.probs, kept["id"].astype(np.int64), w / w.sum())
            assert problem is None, f"step {i}: {problem}"
            targets.append(r.stages[-1].value)
            state = r.next_state(token)
    finally:
        llama_cpp.llama_sampler_free(chain)
    assert targets[0] == pytest.approx(target, abs=1e-6)
    if decay > 0:
        assert len({round(t, 6) for t in targets}) > 3  # the adapted target moves with the picks


def test_a_forced_token_moves_mu_but_not_the_adaptive_average():
    v = _steps(1, 500, 3)[0]
    s = OFF.replace(mirostat=2)
    r = apply_chain(v, s)
    kept = int(r.ids[0])
    assert r.next_state(kept, drawn=False).mu != r.state.mu
    cut = int(np.argsort(v)[0])  # the least likely token: Mirostat cut it
    assert r.p_final(cut) == 0 and r.next_state(cut, drawn=False).mu == r.state.mu
    a = OFF.replace(adaptive_target=0.4)
    ra = apply_chain(v, a)
    assert ra.next_state(kept, drawn=False) == ra.state and ra.next_state(kept).ema_sum != ra.state.ema_sum


# ----------------------------------------------------------------------------- by hand

def test_dry_by_hand():
    # a b c a b: the suffix "a b" repeats what came before c, so c would extend a repeat of length 2
    pens = dry_penalties([1, 2, 3, 1, 2], multiplier=1.0, base=2.0, allowed_length=1, last_n=64)
    assert pens == {3: np.float32(2.0)}  # 1 * 2 ** (2 - 1)
    assert dry_penalties([1, 2, 3, 1, 2], 1.0, 2.0, allowed_length=2, last_n=64) == {3: np.float32(1.0)}
    assert dry_penalties([1, 2, 3, 1, 2], 1.0, 2.0, allowed_length=3, last_n=64) == {}  # too short a repeat
    assert dry_penalties([1, 2, 3, 1, 2], 0.0, 2.0, 1, 64) == {}  # multiplier 0: off


def test_mirostat_v2_by_hand():
    p = np.array([0.5, 0.25, 0.125, 0.125])
    logits = np.log(p).astype(np.float32)
    s = OFF.replace(mirostat=2, mirostat_tau=1.0)  # mu starts at 2 bits: surprises 1, 2, 3, 3
    r = apply_chain(logits, s)
    assert sorted(r.ids.tolist()) == [0, 1] and np.allclose(sorted(r.probs), [1 / 3, 2 / 3])
    # after token 1 (p 1/3 now, surprise log2 3 = 1.585 bits): mu = 2 - 0.1 * (1.585 - 1)
    assert r.next_state(1).mu == pytest.approx(2 - 0.1 * (np.log2(3) - 1), abs=1e-6)


def test_adaptive_p_by_hand():
    logits = np.log(np.array([0.6, 0.3, 0.1])).astype(np.float32)
    s = OFF.replace(adaptive_target=0.3, adaptive_decay=0.9)
    r = apply_chain(logits, s)
    # the average starts at the target, so the adapted target is 0.3; distances |p - 0.3| / 0.3
    d = np.abs(np.array([0.6, 0.3, 0.1]) - 0.3) / 0.3
    new = 5 - 10 * d * d / (1 + d)
    expected = np.exp(new - new.max()) / np.exp(new - new.max()).sum()
    assert r.stages[-1].value == pytest.approx(0.3)
    assert np.allclose(r.probs[np.argsort(r.ids)], expected, atol=1e-6)
    # taking token 0 (p 0.6 before the transform) pulls the next target down: 2 * 0.3 - mean
    nxt = r.next_state(0)
    mean = (0.6 + 0.9 * 3.0) / (1 + 0.9 * 10.0)
    assert nxt.adapted_target(0.3) == pytest.approx(2 * 0.3 - mean, abs=1e-6)


def test_mirostat_and_adaptive_p_on_the_models_real_logits(local_backend):
    """Both follow llama.cpp on the embedded model's own next-token logits, along a real text."""
    toks = local_backend.tokenize("Once upon a time, in a land far away, there lived a")
    local_backend.prepare(toks[:4])
    real = []
    for t in toks[4:]:
        real.append(np.array(local_backend.logits(), dtype=np.float32))
        local_backend.feed(t)
    for version in (1, 2, "adaptive"):
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if version == "adaptive":
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_min_p(0.05, 1))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_adaptive_p(0.3, 0.9, 5))
            s = OFF.replace(min_p=0.05, samplers=("min_p",), adaptive_target=0.3, adaptive_decay=0.9)
        else:
            sm = (llama_cpp.llama_sampler_init_mirostat(262144, 5, 5.0, 0.1, 100) if version == 1
                  else llama_cpp.llama_sampler_init_mirostat_v2(5, 5.0, 0.1))
            llama_cpp.llama_sampler_chain_add(chain, sm)
            s = OFF.replace(mirostat=version)
        state = SamplerState.initial(s)
        try:
            for i, v in enumerate(real):
                arr, cur = _array(v)
                llama_cpp.llama_sampler_apply(chain, ctypes.byref(cur))
                kept = arr[: cur.size]
                token = int(arr[cur.selected]["id"])
                if version == "adaptive":
                    llama_cpp.llama_sampler_accept(chain, token)
                lg = kept["logit"].astype(np.float64)
                w = np.exp(lg - lg.max())
                r = apply_chain(v, s, state=state)
                problem = compare(r.ids, r.probs, kept["id"].astype(np.int64), w / w.sum())
                assert problem is None, f"{version} step {i}: {problem}"
                state = r.next_state(token)
        finally:
            llama_cpp.llama_sampler_free(chain)
