"""Our sampler chain against llama.cpp's own samplers, through llama-cpp-python's low-level API.

Each case builds a ``llama_token_data_array`` from a numpy logits vector, runs llama.cpp's
samplers on it (``llama_sampler_init_*`` in a ``llama_sampler_chain``, with the history fed
through ``llama_sampler_accept``), reads back the surviving candidates and softmaxes their
logits; then runs ``apply_chain`` on the same vector and requires the same kept token set and
probabilities within 1e-5. No model file is needed.

The random logit vectors have distinct values: llama.cpp breaks ties between equal logits
with an unstable sort, so tied candidates at a boundary are not reproducible. For the same
reason typical-p is compared alone only up to 32,000 candidates: on a flat 262,144-token
vocabulary many float32 typicality scores tie, and the std::sort order inside llama.cpp
decides which of two tied tokens makes the cut.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import numpy as np
import pytest

import llama_cpp
from app.core.sampling import apply_chain, resolve_logit_bias
from backends.base import SamplerSettings

OFF = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0)
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
TOL = 1e-5
N_CASES = 240


# ----------------------------------------------------------------------------- llama.cpp side


def _make_sampler(name: str, s: SamplerSettings, n_vocab: int):
    if name == "penalties":
        return llama_cpp.llama_sampler_init_penalties(
            n_vocab, s.penalty_last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty)
    if name == "top_k":
        return llama_cpp.llama_sampler_init_top_k(s.top_k)
    if name == "typical":
        return llama_cpp.llama_sampler_init_typical(s.typical_p, s.min_keep)
    if name == "top_p":
        return llama_cpp.llama_sampler_init_top_p(s.top_p, s.min_keep)
    if name == "min_p":
        return llama_cpp.llama_sampler_init_min_p(s.min_p, s.min_keep)
    if name == "temperature":
        return llama_cpp.llama_sampler_init_temp_ext(s.temperature, s.dynatemp_range, s.dynatemp_exponent)
    if name == "top_n_sigma":
        return llama_cpp.llama_sampler_init_top_n_sigma(s.top_n_sigma)
    if name == "xtc":  # seed fixed; the tests use probability 1 (XTC acts at every step) or 0
        return llama_cpp.llama_sampler_init_xtc(s.xtc_probability, s.xtc_threshold, s.min_keep, 1234)
    if name == "logit_bias":
        ids, bias = resolve_logit_bias(s)
        arr = (llama_cpp.llama_logit_bias * len(ids))(*[llama_cpp.llama_logit_bias(int(t), float(b))
                                                        for t, b in zip(ids, bias)])
        return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(ids), arr)
    raise ValueError(name)


def llama_chain(logits: np.ndarray, s: SamplerSettings, history=(), single: str | None = None):
    """Kept ids and their probabilities after llama.cpp's samplers.

    ``single``: apply that one sampler alone with ``llama_sampler_apply``; otherwise build the
    whole default-order chain with ``llama_sampler_chain_init`` / ``llama_sampler_chain_add``."""
    n = logits.shape[0]
    arr = np.zeros(n, dtype=TOKEN_DATA)
    arr["id"] = np.arange(n, dtype=np.int32)
    arr["logit"] = logits
    cur = llama_cpp.llama_token_data_array(
        data=arr.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
        size=n, selected=-1, sorted=False)
    if single is not None:
        smpl = _make_sampler(single, s, n)
    else:
        smpl = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        names = (("logit_bias",) if s.logit_bias else ()) + tuple(nm for nm in s.samplers if nm != "dry")
        for name in names:  # the chain owns and frees what is added
            llama_cpp.llama_sampler_chain_add(smpl, _make_sampler(name, s, n))
    try:
        for t in history:
            llama_cpp.llama_sampler_accept(smpl, int(t))
        llama_cpp.llama_sampler_apply(smpl, ctypes.byref(cur))
        # a sampler may move the start of the array (XTC drops its head by advancing ``data``)
        start = (ctypes.cast(cur.data, ctypes.c_void_p).value - arr.ctypes.data) // TOKEN_DATA.itemsize
        out = arr[start: start + cur.size].copy()
    finally:
        llama_cpp.llama_sampler_free(smpl)
    out = out[np.isfinite(out["logit"])]  # greedy temperature leaves the rest at -inf
    lg = out["logit"].astype(np.float64)
    w = np.exp(lg - lg.max())
    return out["id"].astype(np.int64), w / w.sum()


def compare(ours_ids, ours_probs, ref_ids, ref_probs) -> str | None:
    """None when equal (same kept set, probabilities within TOL), else what differs."""
    a = dict(zip(np.asarray(ours_ids).tolist(), np.asarray(ours_probs).tolist()))
    b = dict(zip(np.asarray(ref_ids).tolist(), np.asarray(ref_probs).tolist()))
    if len(a) != len(ours_ids) or len(b) != len(ref_ids):
        return "duplicate ids"
    if set(a) != set(b):
        extra, missing = sorted(set(a) - set(b))[:5], sorted(set(b) - set(a))[:5]
        return f"kept sets differ: ours {len(a)}, llama {len(b)}; extra {extra}, missing {missing}"
    err = max(abs(a[k] - b[k]) for k in a)
    if err > TOL:
        return f"probabilities differ by {err:.3g}"
    return None


# ----------------------------------------------------------------------------- random cases


def distinct(v: np.ndarray) -> np.ndarray:
    """float32 copy of v with every value distinct: equal values are pushed up by whole ulps
    (in the integer image of the float order), keeping the order of the rest."""
    v = np.asarray(v, dtype=np.float32) + np.float32(0.0)  # -0.0 -> +0.0
    order = np.argsort(v, kind="stable")
    b = v[order].view(np.int32).astype(np.int64)
    key = np.where(b < 0, -(b & 0x7FFFFFFF) - 1, b)  # monotonic integer image of the floats
    ramp = np.arange(key.shape[0], dtype=np.int64)
    key = np.maximum.accumulate(key - ramp) + ramp  # strictly increasing
    key[key == -1] = 0  # -1 would be -0.0, equal to +0.0
    key = np.maximum.accumulate(key - ramp) + ramp
    b = np.where(key < 0, (-(key + 1)) | -0x80000000, key).astype(np.int32)
    out = np.empty_like(v)
    out[order] = b.view(np.float32)
    assert np.unique(out).shape[0] == out.shape[0]
    return out


KINDS = ("penalties", "top_k", "typical", "top_p", "min_p", "temperature", "chain", "chain")
SIZES = (1, 2, 3, 7, 40, 128, 129, 500, 1024, 1025, 4000, 32000)


@functools.lru_cache(maxsize=None)
def make_case(i: int):
    """Case i: (kind, logits, settings, history). Deterministic per i."""
    rng = np.random.default_rng(1000 + i)
    kind = KINDS[i % len(KINDS)]
    n = 262144 if (i % 20 == 9 and kind != "typical") else int(rng.choice(SIZES))
    scale = float(rng.choice([0.05, 0.5, 1.0, 2.0, 4.0, 8.0]))
    v = rng.normal(0.0, scale, n)
    if rng.random() < 0.5:  # a model-like peaked head
        hot = rng.choice(n, min(n, int(rng.integers(1, 12))), replace=False)
        v[hot] += rng.uniform(1.0, 12.0, hot.shape[0])
    v = distinct(30.0 * np.tanh(v / 30.0))  # bounded (typical needs exp > 0), no clusters
    s = OFF.replace(min_keep=int(rng.choice([1, 1, 1, 2, 3, 10, 50])))
    history: list[int] = []
    chain = kind == "chain"
    if kind == "penalties" or (chain and rng.random() < 0.6):
        s = s.replace(repeat_penalty=float(rng.choice([1.0, 1.1, 1.5, 0.8, 2.0])),
                      frequency_penalty=float(rng.choice([0.0, 0.1, 0.5, -0.3])),
                      presence_penalty=float(rng.choice([0.0, 0.2, -0.5, 1.0])),
                      penalty_last_n=int(rng.choice([1, 4, 64, 256])))
        history = rng.integers(0, n, int(rng.integers(0, 300))).tolist()
        if history:
            history += history[: int(rng.integers(0, 20))]  # repeats, counted in the window
            # the top tokens are the ones whose penalty matters most
            history += np.argsort(-v)[: int(rng.integers(0, 4))].tolist()
    if kind == "top_k" or (chain and rng.random() < 0.8):
        s = s.replace(top_k=int(rng.choice([1, 2, 5, 40, 100, 1000, 5000, 300000])))
    if kind == "typical" or (chain and rng.random() < 0.3):
        s = s.replace(typical_p=float(rng.uniform(0.05, 0.99)))
    if kind == "top_p" or (chain and rng.random() < 0.8):
        s = s.replace(top_p=float(rng.choice([0.05, 0.3, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999])))
    if kind == "min_p" or (chain and rng.random() < 0.7):
        s = s.replace(min_p=float(rng.choice([0.001, 0.01, 0.05, 0.1, 0.3, 0.9, 1.0])))
    if kind == "temperature" or (chain and rng.random() < 0.9):
        s = s.replace(temperature=float(rng.choice([0.0, 0.1, 0.5, 0.8, 1.3, 2.5])))
    return kind, v, s, history


@pytest.mark.parametrize("i", range(N_CASES))
def test_matches_llama_cpp(i):
    kind, v, s, history = make_case(i)
    v = v.copy()
    keep = v.copy()
    single = None if kind == "chain" else kind
    ref_ids, ref_p = llama_chain(v, s, history, single=single)
    r = apply_chain(v, s, history)
    assert np.array_equal(v, keep)
    problem = compare(r.ids, r.probs, ref_ids, ref_p)
    assert problem is None, f"case {i} ({kind}, n={v.shape[0]}, {s}): {problem}"
    # the final probabilities reported per token agree with the arrays
    for t in ref_ids[:5].tolist():
        assert abs(r.p_final(t) - float(ref_p[ref_ids.tolist().index(t)])) <= TOL


def test_case_mix_covers_what_it_should():
    cases = [make_case(i) for i in range(N_CASES)]
    kinds = [c[0] for c in cases]
    for kind in set(KINDS):
        assert kinds.count(kind) >= 25, kind
    assert sum(c[1].shape[0] == 262144 for c in cases) >= 8
    assert sum(c[2].min_keep > 1 for c in cases) >= 50
    assert sum(bool(c[3]) and c[0] in ("penalties", "chain") for c in cases) >= 40
    assert sum(c[2].temperature == 0.0 for c in cases) >= 10


# ----------------------------------------------------------------------------- specific cases


def test_default_chain_on_full_vocabulary():
    rng = np.random.default_rng(77)
    for trial in range(4):
        v = distinct(rng.normal(0, 2.5, 262144))
        v[rng.choice(262144, 10, replace=False)] += np.float32(9.0)
        s = SamplerSettings(repeat_penalty=1.15, frequency_penalty=0.05, presence_penalty=0.05)
        history = rng.integers(0, 262144, 64).tolist() + np.argsort(-v)[:3].tolist()
        ref = llama_chain(v, s, history)
        r = apply_chain(v, s, history)
        assert compare(r.ids, r.probs, *ref) is None


@pytest.mark.parametrize("stage", ["top_p", "min_p", "top_k", "penalties"])
def test_stage_alone_on_flat_full_vocabulary(stage):
    """The hardest case for top-p: a flat 262k vocabulary, where llama.cpp's float32 sums
    decide the boundary (we repeat them)."""
    rng = np.random.default_rng({"top_p": 1, "min_p": 2, "top_k": 3, "penalties": 4}[stage])
    for trial in range(3):
        v = distinct(rng.normal(0, float(rng.choice([0.5, 1.0, 2.0])), 262144))
        s = {
            "top_p": OFF.replace(top_p=float(rng.uniform(0.3, 0.99))),
            "min_p": OFF.replace(min_p=float(rng.uniform(0.01, 0.5))),
            "top_k": OFF.replace(top_k=int(rng.integers(1, 100000))),
            "penalties": OFF.replace(repeat_penalty=1.3, frequency_penalty=0.2, presence_penalty=-0.4,
                                     penalty_last_n=128),
        }[stage]
        history = rng.integers(0, 262144, 200).tolist()
        ref = llama_chain(v, s, history, single=stage)
        r = apply_chain(v, s, history)
        assert compare(r.ids, r.probs, *ref) is None, (stage, trial)


def test_typical_then_top_p_and_min_p_keep_llama_order_effects():
    """Typical reorders the candidates; top-p after it sums in that order, min-p's unsorted
    path keeps it. Compared on mid-sized vocabularies."""
    rng = np.random.default_rng(12)
    for trial in range(20):
        n = int(rng.choice([300, 2000, 20000]))
        v = distinct(rng.normal(0, float(rng.choice([0.5, 1.5, 3.0])), n))
        s = OFF.replace(typical_p=float(rng.uniform(0.3, 0.95)), top_p=float(rng.uniform(0.5, 0.99)),
                        min_p=float(rng.choice([0.0, 0.05])), min_keep=int(rng.choice([1, 5])),
                        temperature=float(rng.choice([1.0, 0.7])))
        assert compare(*_ours(v, s), *llama_chain(v, s)) is None, trial


def _ours(v, s, history=()):
    r = apply_chain(v, s, history)
    return r.ids, r.probs


# ----------------------------------------------------------------------------- the check can fail


def test_comparison_detects_a_different_setting():
    """Every stage, with a slightly different setting on the llama.cpp side, must be caught:
    the comparison above is not vacuous."""
    caught: dict[str, int] = {}
    rng = np.random.default_rng(5)
    for trial in range(10):
        v = distinct(rng.normal(0, 2.0, 3000))
        history = rng.integers(0, 3000, 100).tolist() + np.argsort(-v)[:5].tolist()
        pairs = {
            "penalties": (OFF.replace(repeat_penalty=1.3, penalty_last_n=64),
                          OFF.replace(repeat_penalty=1.3, penalty_last_n=32)),
            "top_k": (OFF.replace(top_k=40), OFF.replace(top_k=41)),
            "typical": (OFF.replace(typical_p=0.9), OFF.replace(typical_p=0.89)),
            "top_p": (OFF.replace(top_p=0.9), OFF.replace(top_p=0.9, min_keep=2000)),
            "min_p": (OFF.replace(min_p=0.05), OFF.replace(min_p=0.04)),
            "temperature": (OFF.replace(temperature=0.8), OFF.replace(temperature=0.8001)),
            "top_n_sigma": (OFF.replace(top_n_sigma=1.5), OFF.replace(top_n_sigma=1.49)),
            "xtc": (OFF.replace(xtc_probability=1.0, xtc_threshold=0.01),
                    OFF.replace(xtc_probability=1.0, xtc_threshold=0.012)),
            "logit_bias": (OFF.replace(logit_bias=((int(np.argmax(v)), -1.0),)),
                           OFF.replace(logit_bias=((int(np.argmax(v)), -1.01),))),
        }
        pairs["dynatemp"] = (OFF.replace(temperature=0.8, dynatemp_range=0.5),
                             OFF.replace(temperature=0.8, dynatemp_range=0.5, dynatemp_exponent=1.01))
        for name, (ours_s, theirs_s) in pairs.items():
            caught.setdefault(name, 0)
            single = "temperature" if name == "dynatemp" else name
            # sanity: with the same settings they agree
            assert compare(*_ours(v, ours_s, history), *llama_chain(v, ours_s, history, single=single)) is None
            if compare(*_ours(v, ours_s, history), *llama_chain(v, theirs_s, history, single=single)):
                caught[name] += 1
    assert all(count >= 1 for count in caught.values()), caught


def test_comparison_detects_a_perturbed_probability():
    v = distinct(np.random.default_rng(6).normal(0, 1, 100))
    ids, p = llama_chain(v, OFF.replace(top_k=10))
    assert compare(ids, p, ids, p) is None
    q = p.copy()
    q[0] += 2 * TOL
    assert compare(ids, q, ids, p) is not None
    assert compare(ids[:-1], p[:-1], ids, p) is not None


# ----------------------------------------------------------------------------- exact boundaries
# Random distinct logits almost never sit exactly on a threshold, so the comparisons that
# decide ties (>= or >) are checked here on logits whose float32 probabilities are exact
# powers of two: p = 1/2, 1/4, 1/8, 1/16, 1/16 (S = 2 exactly).

POW2 = np.log(np.array([1.0, 0.5, 0.25, 0.125, 0.125])).astype(np.float32) + np.float32(1.0)


def test_exact_boundary_top_p_keeps_when_sum_reaches_p():
    for top_p, expect in ((0.75, 2), (0.5, 1), (0.875, 3), (0.76, 3)):
        s = OFF.replace(top_p=top_p)
        ref_ids, ref_p = llama_chain(POW2, s, single="top_p")
        assert len(ref_ids) == expect, (top_p, ref_ids)  # llama.cpp: cum >= p
        assert compare(*_ours(POW2, s), ref_ids, ref_p) is None, top_p


def test_exact_boundary_typical_needs_more_than_p():
    # typicality order here: ids 1, 0, 2, then 3 and 4; cumulative 0.25, 0.75, 0.875, ...
    for typ, expect in ((0.75, 3), (0.25, 2), (0.74, 2), (0.875, 4)):
        s = OFF.replace(typical_p=typ)
        ref_ids, ref_p = llama_chain(POW2, s, single="typical")
        assert len(ref_ids) == expect, (typ, ref_ids)  # llama.cpp: cum > p
        assert compare(*_ours(POW2, s), ref_ids, ref_p) is None, typ


def test_exact_boundary_min_p_keeps_equal_to_threshold():
    # min_p 0.5: threshold logit = max + logf(0.5) = the logit of id 1 exactly
    for mk, expect in ((1, 2), (3, 3)):
        s = OFF.replace(min_p=0.5, min_keep=mk)
        ref_ids, ref_p = llama_chain(POW2, s, single="min_p")
        assert len(ref_ids) == expect, (mk, ref_ids)
        assert compare(*_ours(POW2, s), ref_ids, ref_p) is None, mk
    s = OFF.replace(min_p=0.25)
    assert compare(*_ours(POW2, s), *llama_chain(POW2, s, single="min_p")) is None


def test_greedy_tie_takes_the_first_in_array_order():
    v = np.array([1.0, 3.0, 2.0, 3.0, 0.0], dtype=np.float32)
    s = OFF.replace(temperature=0.0)
    ref_ids, ref_p = llama_chain(v, s, single="temperature")
    assert ref_ids.tolist() == [1]
    assert compare(*_ours(v, s), ref_ids, ref_p) is None


def test_penalties_on_zero_and_negative_logits():
    v = np.array([0.0, -1.5, 2.0, -0.25, 1.0], dtype=np.float32)
    s = OFF.replace(repeat_penalty=1.7, frequency_penalty=0.3, presence_penalty=0.2, penalty_last_n=5)
    hist = [0, 1, 1, 3, 2, 9, 0]
    ref = llama_chain(v, s, hist, single="penalties")
    assert compare(*_ours(v, s, hist), *ref) is None


def test_expf_and_logf_match_the_c_library():
    """Our float32 exp/log must round like C's expf/logf: llama.cpp's top-p and typical
    boundaries on a large flat vocabulary depend on it (numpy's float32 exp is off by an ulp
    on ~40% of inputs)."""
    from app.core import sampling

    libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    libm.expf.restype = libm.logf.restype = ctypes.c_float
    libm.expf.argtypes = libm.logf.argtypes = [ctypes.c_float]
    rng = np.random.default_rng(21)
    x = (-np.abs(rng.normal(0, 8, 20000))).astype(np.float32)
    ref = np.array([libm.expf(float(t)) for t in x.tolist()], dtype=np.float32)
    assert np.count_nonzero(sampling._expf(x) != ref) <= 40  # about 1 in 1000 allowed
    p = rng.uniform(1e-9, 1.0, 20000).astype(np.float32)
    ref = np.array([libm.logf(float(t)) for t in p.tolist()], dtype=np.float32)
    # glibc's logf itself is not always correctly rounded: ~0.7% differ here (numpy's: ~22%)
    assert np.count_nonzero(sampling._logf(p) != ref) <= 300
