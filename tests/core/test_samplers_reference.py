"""The samplers added beside llama.cpp's classic chain (top-n-sigma, XTC, dynamic temperature,
logit bias) and orders of the user's choosing, against llama.cpp's own samplers.

The llama.cpp side is ``tests/core/test_sampling_reference.llama_chain`` (its samplers through
llama-cpp-python's ctypes declarations, each checked against the vendored ``include/llama.h``
of 0.3.36: ``top_n_sigma(float)``, ``xtc(float, float, size_t, uint32)``,
``temp_ext(float, float, float)``, ``logit_bias(int32, int32, const llama_logit_bias *)``).
XTC runs at probability 1, so it acts at every step on both sides (its draw comes from
different generators). The same kept set and probabilities within 1e-5 are required, on random
logits of every size and on the embedded model's real logits.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from app.core.sampling import apply_chain
from backends.base import SAMPLER_ORDER, SamplerSettings, samplers_from_string
from tests.core.test_sampling_reference import OFF, SIZES, compare, distinct, llama_chain

KINDS = ("top_n_sigma", "xtc", "dynatemp", "logit_bias", "order")
N_CASES = 150
#: the stages a random order draws from (DRY, which needs a vocabulary, is compared in
#: tests/core/test_samplers_stateful_reference.py)
STAGES = tuple(nm for nm in SAMPLER_ORDER if nm != "dry")


def _random_settings(rng: np.random.Generator, kind: str, v: np.ndarray) -> SamplerSettings:
    n = v.shape[0]
    s = OFF.replace(min_keep=int(rng.choice([1, 1, 2, 5])))
    if kind == "top_n_sigma":
        return s.replace(top_n_sigma=float(rng.choice([0.5, 1.0, 1.5, 2.0, 3.0, 5.0])))
    if kind == "xtc":
        return s.replace(xtc_probability=1.0, xtc_threshold=float(rng.choice([0.001, 0.01, 0.05, 0.1, 0.2, 0.5])))
    if kind == "dynatemp":
        return s.replace(temperature=float(rng.choice([0.0, 0.3, 0.8, 1.0, 1.5])),
                         dynatemp_range=float(rng.choice([0.1, 0.5, 1.0])),
                         dynatemp_exponent=float(rng.choice([0.5, 1.0, 2.0])))
    if kind == "logit_bias":
        top = np.argsort(-v)[:8]
        picks = rng.choice(n, min(n, 5), replace=False).tolist() + top[: int(rng.integers(1, 4))].tolist()
        bias = tuple((int(t), float(rng.choice([-np.inf, -5.0, -1.0, 0.5, 3.0]))) for t in picks)
        if all(b == -np.inf for _, b in bias) and len(set(picks)) >= n:
            bias = bias[1:]
        return s.replace(logit_bias=bias + bias[:1])  # a token biased twice: the biases add up
    # a random order over a random set of active stages
    names = [nm for nm in STAGES if rng.random() < 0.6] or ["top_k", "temperature"]
    rng.shuffle(names)
    if "top_n_sigma" in names and "typical" in names and names.index("typical") > names.index("top_n_sigma"):
        # llama.cpp's typical-p computes a NaN entropy over top-n-sigma's -inf tokens (our
        # documented difference): keep typical before it
        names.remove("typical")
        names.insert(names.index("top_n_sigma"), "typical")
    if "top_n_sigma" in names:  # its -inf tokens count in llama.cpp's later min_keep (documented)
        s = s.replace(min_keep=1)
    s = s.replace(samplers=tuple(names), top_k=int(rng.choice([5, 40, 1000])),
                  top_p=float(rng.choice([0.5, 0.9, 0.99])), min_p=float(rng.choice([0.01, 0.05, 0.2])),
                  typical_p=float(rng.choice([0.9, 1.0])), top_n_sigma=float(rng.choice([1.0, 2.0, 3.0])),
                  xtc_probability=1.0, xtc_threshold=float(rng.choice([0.05, 0.1, 0.3])),
                  temperature=float(rng.choice([0.5, 0.8, 1.3])))
    if "penalties" in names:
        s = s.replace(repeat_penalty=1.3, frequency_penalty=0.1, presence_penalty=0.1)
    return s


@functools.lru_cache(maxsize=None)
def make_case(i: int):
    rng = np.random.default_rng(7000 + i)
    kind = KINDS[i % len(KINDS)]
    n = 262144 if i % 15 == 7 else int(rng.choice(SIZES))
    scale = float(rng.choice([0.5, 1.0, 2.0, 4.0]))
    v = rng.normal(0.0, scale, n)
    if rng.random() < 0.6:
        hot = rng.choice(n, min(n, int(rng.integers(1, 12))), replace=False)
        v[hot] += rng.uniform(1.0, 12.0, hot.shape[0])
    v = distinct(30.0 * np.tanh(v / 30.0))
    s = _random_settings(rng, kind, v)
    history = rng.integers(0, n, 100).tolist() + np.argsort(-v)[:3].tolist() if "penalties" in s.samplers else []
    return kind, v, s, history


@pytest.mark.parametrize("i", range(N_CASES))
def test_new_samplers_and_orders_match_llama_cpp(i):
    kind, v, s, history = make_case(i)
    keep = v.copy()
    single = {"dynatemp": "temperature", "order": None}.get(kind, kind)
    if kind == "logit_bias":
        single = None  # logit bias is llama.cpp's first sampler: the chain builder adds it
        s = s.replace(samplers=())
    ref_ids, ref_p = llama_chain(v, s, history, single=single)
    r = apply_chain(v, s, history)
    assert np.array_equal(v, keep)
    problem = compare(r.ids, r.probs, ref_ids, ref_p)
    assert problem is None, f"case {i} ({kind}, n={v.shape[0]}, {s}): {problem}"


def test_the_cases_cover_what_they_should():
    cases = [make_case(i) for i in range(N_CASES)]
    for kind in KINDS:
        assert sum(c[0] == kind for c in cases) == N_CASES // len(KINDS)
    assert sum(c[1].shape[0] == 262144 for c in cases) >= 8
    orders = [c[2].samplers for c in cases if c[0] == "order"]
    assert len(set(orders)) >= 20  # orders really vary
    assert sum(o.index("temperature") < o.index("top_p") for o in orders if "temperature" in o and "top_p" in o) >= 3
    assert any(b == -np.inf for c in cases for _, b in c[2].logit_bias)
    # each new stage really removes tokens in some case (the comparison is not vacuous)
    removed = {"top_n_sigma": 0, "xtc": 0, "logit_bias": 0}
    for kind, v, s, history in cases:
        if kind in removed:
            r = apply_chain(v, s, history)
            removed[kind] += int(r.kept < v.shape[0])
    assert all(count >= 5 for count in removed.values()), removed


@pytest.fixture(scope="module")
def real_logits(local_backend):
    """Next-token logits of the embedded model after a few prompts (copies)."""
    out = []
    for prompt in ("The capital of France is", "Once upon a time", "def fibonacci(n):", "1, 2, 3, 4,"):
        local_backend.prepare(local_backend.tokenize(prompt))
        out.append(np.array(local_backend.logits(), dtype=np.float32))
    return out


REAL = [
    OFF.replace(top_n_sigma=1.0), OFF.replace(top_n_sigma=3.0),
    OFF.replace(xtc_probability=1.0, xtc_threshold=0.1), OFF.replace(xtc_probability=1.0, xtc_threshold=0.01),
    OFF.replace(temperature=0.8, dynatemp_range=0.5), OFF.replace(temperature=1.0, dynatemp_range=1.0,
                                                                  dynatemp_exponent=2.0),
    SamplerSettings(),  # the default chain, in llama.cpp's default order
    SamplerSettings(samplers=samplers_from_string("temperature;top_k;top_p;min_p"), temperature=1.5),
    SamplerSettings(samplers=samplers_from_string("min_p;xtc;top_n_sigma;temperature"), xtc_probability=1.0,
                    top_n_sigma=2.0),
    SamplerSettings(samplers=samplers_from_string("top_k;temperature;typ_p"), typical_p=0.9, top_k=200),
    SamplerSettings(samplers=samplers_from_string("top_p;top_k"), top_p=0.9, top_k=5, temperature=1.0),
]


@pytest.mark.parametrize("j", range(len(REAL)))
def test_on_real_logits_of_the_embedded_model(real_logits, j):
    s = REAL[j]
    for v in real_logits:
        ref_ids, ref_p = llama_chain(v, s, (), single=None)
        r = apply_chain(v, s)
        problem = compare(r.ids, r.probs, ref_ids, ref_p)
        assert problem is None, f"{s.order_string} {s}: {problem}"


def test_logit_bias_real_tokens(real_logits, local_backend):
    """A text bias biases each of its tokens (resolved through the model's tokenizer), the
    same as giving the ids; -inf bans."""
    from app.core.sampling import resolve_logit_bias

    v = real_logits[0]
    best = int(np.argmax(v))
    text = local_backend.piece(best)
    s_text = OFF.replace(logit_bias=((text, -np.inf),))
    ids, bias = resolve_logit_bias(s_text, lambda t: local_backend.tokenize(t, add_special=False))
    assert best in ids.tolist()
    r = apply_chain(v, s_text, logit_bias=(ids, bias))
    assert r.p_final(best) == 0.0 and r.stages[0].name == "logit_bias" and r.stages[0].removed_mass > 0
    ref_ids, ref_p = llama_chain(v, OFF.replace(logit_bias=tuple((int(t), float(b)) for t, b in zip(ids, bias))))
    assert compare(r.ids, r.probs, ref_ids, ref_p) is None
