"""Unit tests of app.core.sampling: hand-computed cases per stage, statistics, records, draw.

No llama_cpp, no Qt. The comparison with llama.cpp itself is in test_sampling_reference.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.core import sampling
from app.core.sampling import ChainResult, apply_chain, softmax_stats
from backends.base import SAMPLER_ORDER, SamplerSettings, StageInfo, Step

OFF = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0)


def softmax(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    w = np.exp(v - v.max())
    return w / w.sum()


def final_map(r: ChainResult) -> dict[int, float]:
    return {int(i): float(p) for i, p in zip(r.ids, r.probs)}


def f32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


# ----------------------------------------------------------------------------- statistics


def test_softmax_stats_matches_direct_formulas():
    v = f32([2.0, -1.0, 0.5, 3.25, 0.0])
    p = softmax(v)
    lse, ent = softmax_stats(v)
    assert lse == pytest.approx(math.log(np.exp(v.astype(np.float64)).sum()), abs=1e-6)
    assert ent == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-6)


def test_softmax_stats_uniform_and_one_hot():
    lse, ent = softmax_stats(np.zeros(1000, dtype=np.float32))
    assert lse == pytest.approx(math.log(1000), abs=1e-5)
    assert ent == pytest.approx(math.log(1000), abs=1e-5)
    one_hot = np.full(50, -np.inf, dtype=np.float32)
    one_hot[7] = 3.0
    lse, ent = softmax_stats(one_hot)
    assert lse == pytest.approx(3.0)
    assert ent == pytest.approx(0.0, abs=1e-12)


def test_softmax_stats_handles_minus_inf_nan_and_float64_input():
    v = np.array([1.0, -np.inf, 2.0, np.nan, 0.5])
    p = softmax([1.0, 2.0, 0.5])
    lse, ent = softmax_stats(v)
    assert lse == pytest.approx(math.log(np.exp([1.0, 2.0, 0.5]).sum()), abs=1e-6)
    assert ent == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-6)
    assert np.isnan(v[3])  # input untouched


def test_the_chain_selects_its_top_tokens_among_the_cleaned_logits_when_some_are_nan():
    # the top-N is selected before the full-vocabulary pass cleans NaN: then it is selected again
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(50_000) * 3).astype(np.float32)
    bad = list(range(0, 50_000, 2)) + list(range(1, 45_000, 2))  # most of them, as a broken model gives
    x[bad] = np.nan
    clean = x.copy()
    clean[bad] = -np.inf
    s = SamplerSettings(top_k=40, top_n=20)
    a, b = apply_chain(x, s), apply_chain(clean, s)
    assert len(a.top_ids) == 20 and list(a.top_ids) == list(b.top_ids) and not set(a.top_ids.tolist()) & set(bad)
    assert list(a.top_ids) == list(np.argsort(-clean, kind="stable")[:20])
    assert a.entropy_raw == pytest.approx(b.entropy_raw, abs=1e-9) and list(a.ids) == list(b.ids)
    assert np.isnan(x[bad]).all()  # input untouched


def test_softmax_stats_large_vocab_accuracy():
    rng = np.random.default_rng(3)
    v = (rng.normal(0, 3, 262144) + 20).astype(np.float32)
    p = softmax(v)
    lse, ent = softmax_stats(v)
    v64 = v.astype(np.float64)
    assert lse == pytest.approx(v64.max() + math.log(np.exp(v64 - v64.max()).sum()), abs=1e-4)
    assert ent == pytest.approx(float(-(p[p > 0] * np.log(p[p > 0])).sum()), abs=1e-4)


def test_chain_entropy_and_kl_match_direct_formulas():
    v = f32([2.0, 1.0, 0.3, -0.5, -2.0, 0.9])
    s = OFF.replace(top_k=4, temperature=0.7)
    r = apply_chain(v, s)
    raw = softmax(v)
    top4 = np.argsort(-v, kind="stable")[:4]
    q = softmax(v[top4] / np.float32(0.7))
    assert r.entropy_raw == pytest.approx(float(-(raw * np.log(raw)).sum()), abs=1e-6)
    assert r.entropy_final == pytest.approx(float(-(q * np.log(q)).sum()), abs=1e-6)
    kl = float((q * (np.log(q) - np.log(raw[top4]))).sum())
    assert r.kl_final_raw == pytest.approx(kl, abs=1e-6)


def test_neutral_settings_change_nothing():
    v = f32([0.1, 2.0, -1.0, 0.7])
    r = apply_chain(v, OFF)
    assert r.stages == ()
    assert sorted(r.ids.tolist()) == [0, 1, 2, 3]
    assert np.allclose(np.asarray(r.probs)[np.argsort(r.ids)], softmax(v), atol=1e-7)
    assert r.kl_final_raw == 0.0
    assert r.entropy_final == pytest.approx(r.entropy_raw)


# ----------------------------------------------------------------------------- top_k


def test_top_k_keeps_k_best_and_renormalises():
    v = f32([1.0, 3.0, 2.0, 0.0])
    r = apply_chain(v, OFF.replace(top_k=2))
    fm = final_map(r)
    assert set(fm) == {1, 2}
    assert fm[1] == pytest.approx(softmax([3.0, 2.0])[0], abs=1e-7)
    (st,) = r.stages
    raw = softmax(v)
    assert st.name == "top_k" and st.kept == 2
    assert st.removed_mass == pytest.approx(raw[0] + raw[3], abs=1e-7)
    assert st.removed_raw == pytest.approx(raw[0] + raw[3], abs=1e-7)


def test_top_k_ignores_min_keep_and_larger_k_keeps_all():
    v = f32([1.0, 3.0, 2.0, 0.0])
    assert apply_chain(v, OFF.replace(top_k=1, min_keep=3)).ids.tolist() == [1]
    r = apply_chain(v, OFF.replace(top_k=10))
    assert r.ids.tolist() == [1, 2, 0, 3]  # llama.cpp sorts while applying top-k
    assert r.stages[0].removed_mass == 0.0


# ----------------------------------------------------------------------------- top_p / typical


def test_top_p_uses_greater_or_equal_and_typical_strictly_greater():
    v = np.zeros(4, dtype=np.float32)  # p = 0.25 each, exactly in float32
    assert len(apply_chain(v, OFF.replace(top_p=0.5)).ids) == 2  # 0.25 + 0.25 >= 0.5
    assert len(apply_chain(v, OFF.replace(typical_p=0.5)).ids) == 3  # needs > 0.5


def test_top_p_hand_case_and_min_keep():
    p = np.array([0.5, 0.3, 0.12, 0.08])
    v = f32(np.log(p))
    assert sorted(apply_chain(v, OFF.replace(top_p=0.6)).ids.tolist()) == [0, 1]
    assert sorted(apply_chain(v, OFF.replace(top_p=0.85)).ids.tolist()) == [0, 1, 2]
    assert apply_chain(v, OFF.replace(top_p=0.4)).ids.tolist() == [0]
    assert sorted(apply_chain(v, OFF.replace(top_p=0.4, min_keep=3)).ids.tolist()) == [0, 1, 2]
    r = apply_chain(v, OFF.replace(top_p=0.6))
    assert r.p_final(0) == pytest.approx(0.5 / 0.8, abs=1e-6)
    assert r.stages[0].removed_mass == pytest.approx(0.2, abs=1e-6)


def test_typical_hand_case_reorders_by_typicality():
    p = np.array([0.6, 0.2, 0.1, 0.05, 0.05])
    v = f32(np.log(p))
    ent = float(-(p * np.log(p)).sum())
    shifted = np.abs(-np.log(p) - ent)
    order = np.argsort(shifted, kind="stable")  # the most "typical" first
    cum = np.cumsum(p[order])
    for tp in (0.15, 0.3, 0.5, 0.75, 0.9):
        last = int(np.flatnonzero(cum > tp)[0]) + 1
        r = apply_chain(v, OFF.replace(typical_p=tp))
        # the candidate array comes back in typicality order, like llama.cpp's
        assert r.ids.tolist() == order[:last].tolist(), tp
    # the most likely token is not the most typical one here: it can be dropped
    assert order[0] != 0
    assert 0 not in apply_chain(v, OFF.replace(typical_p=0.15)).ids.tolist()


def test_typical_min_keep():
    p = np.array([0.6, 0.2, 0.1, 0.05, 0.05])
    v = f32(np.log(p))
    assert len(apply_chain(v, OFF.replace(typical_p=0.1)).ids) == 1
    assert len(apply_chain(v, OFF.replace(typical_p=0.1, min_keep=4)).ids) == 4


# ----------------------------------------------------------------------------- min_p


def test_min_p_threshold_relative_to_max_and_min_keep():
    p = np.array([0.05, 0.5, 0.3, 0.1, 0.05])
    v = f32(np.log(p))
    r = apply_chain(v, OFF.replace(min_p=0.25))  # keep p >= 0.125
    assert r.ids.tolist() == [1, 2]  # unsorted path keeps the array order
    assert r.stages[0].removed_mass == pytest.approx(0.2, abs=1e-6)
    # too few survivors for min_keep: llama.cpp falls back to the sorted path
    r = apply_chain(v, OFF.replace(min_p=0.25, min_keep=4))
    assert r.ids.tolist() == [1, 2, 3, 0] or r.ids.tolist() == [1, 2, 3, 4]
    assert len(r.ids) == 4
    assert apply_chain(v, OFF.replace(min_p=1.0)).ids.tolist() == [1]


# ----------------------------------------------------------------------------- temperature


def test_temperature_scales_logits():
    v = f32([1.0, 2.0, 0.0])
    r = apply_chain(v, OFF.replace(temperature=0.5))
    assert np.allclose(np.asarray(r.probs)[np.argsort(r.ids)], softmax(v / np.float32(0.5)), atol=1e-7)
    (st,) = r.stages
    assert st.name == "temperature" and st.kept == 3 and st.removed_mass == 0.0
    assert st.probs[0] == pytest.approx(softmax(v / np.float32(0.5))[1], abs=1e-7)


def test_greedy_keeps_only_argmax():
    v = f32([1.0, 2.5, 2.0, 0.0])
    r = apply_chain(v, SamplerSettings(temperature=0.0, top_n=4))
    assert r.ids.tolist() == [1] and r.probs.tolist() == [1.0]
    assert r.greedy
    assert r.draw(np.random.default_rng(0)) == 1
    temp_stage = r.stages[-1]
    assert temp_stage.name == "temperature" and temp_stage.kept == 1
    assert temp_stage.probs[0] == 1.0 and temp_stage.probs[1:] == (0.0, 0.0, 0.0)
    assert r.entropy_final == 0.0
    assert r.kl_final_raw == pytest.approx(-math.log(softmax(v)[1]), abs=1e-6)


def test_greedy_ties_take_the_first():
    v = f32([1.0, 2.0, 2.0, 0.0])
    assert apply_chain(v, OFF.replace(temperature=0.0)).ids.tolist() == [1]


# ----------------------------------------------------------------------------- penalties


def test_penalties_window_and_formula():
    v = f32([1.0, 2.0, -1.0, 0.5, 3.0, 0.0])
    s = OFF.replace(repeat_penalty=2.0, frequency_penalty=0.25, presence_penalty=0.5, penalty_last_n=3)
    history = [4, 4, 2, 2, 1]  # window of 3: [2, 2, 1]; token 4 fell out of it
    r = apply_chain(v, s, history)
    expect = v.astype(np.float64).copy()
    expect[2] = -1.0 * 2.0 - (2 * 0.25 + 0.5)  # negative logit: multiplied
    expect[1] = 2.0 / 2.0 - (1 * 0.25 + 0.5)  # positive logit: divided
    assert np.allclose(np.asarray(r.probs)[np.argsort(r.ids)], softmax(expect), atol=1e-7)
    (st,) = r.stages
    assert st.name == "penalties" and st.kept == 6 and st.removed_mass == 0.0


def test_penalties_off_cases():
    v = f32([1.0, 2.0, -1.0])
    neutral = OFF.replace(repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0)
    assert apply_chain(v, neutral, [1, 1, 1]).stages == ()
    no_window = OFF.replace(repeat_penalty=1.5, penalty_last_n=0)
    assert apply_chain(v, no_window, [1, 1, 1]).stages == ()
    r = apply_chain(v, OFF.replace(repeat_penalty=1.5), [])
    assert r.stages[0].name == "penalties"  # active stage, nothing to penalise yet
    assert np.allclose(np.asarray(r.probs)[np.argsort(r.ids)], softmax(v), atol=1e-7)


def test_penalties_ignore_out_of_range_history():
    v = f32([1.0, 2.0, -1.0])
    r = apply_chain(v, OFF.replace(presence_penalty=1.0), [-1, 99, 0])
    expect = np.array([0.0, 2.0, -1.0])
    assert np.allclose(np.asarray(r.probs)[np.argsort(r.ids)], softmax(expect), atol=1e-7)


def test_penalties_on_large_vocab_then_chain():
    rng = np.random.default_rng(5)
    v = rng.normal(0, 2, 50000).astype(np.float32)
    hist = rng.integers(0, 50000, 40).tolist()
    s = SamplerSettings(repeat_penalty=1.3, frequency_penalty=0.2, presence_penalty=0.1)
    r = apply_chain(v, s, hist)
    assert [st.name for st in r.stages] == ["penalties", "top_k", "top_p", "min_p", "temperature"]
    pen = v.astype(np.float64).copy()
    for t in set(hist[-64:]):
        c = hist[-64:].count(t)
        pen[t] = (pen[t] * 1.3 if pen[t] <= 0 else pen[t] / 1.3) - (c * 0.2 + 0.1)
    top40 = np.argsort(-pen, kind="stable")[:40]
    assert set(r.ids.tolist()) <= set(top40.tolist())


# ----------------------------------------------------------------------------- whole chain, records


def _random_case(rng, n=300):
    v = rng.normal(0, 2, n).astype(np.float32)
    v[rng.choice(n, 5, replace=False)] += 5
    return v


def test_stage_records_are_consistent():
    rng = np.random.default_rng(11)
    n = 300
    for trial in range(30):
        v = _random_case(rng, n)
        s = SamplerSettings(top_k=int(rng.integers(5, 200)), top_p=float(rng.uniform(0.5, 0.99)),
                            min_p=float(rng.uniform(0.0, 0.2)), typical_p=float(rng.choice([1.0, 0.9])),
                            temperature=1.0, top_n=n)
        r = apply_chain(v, s)
        raw = softmax(v)
        kept_raw = 1.0
        prev = raw[r.top_ids]
        for st in r.stages:
            assert isinstance(st, StageInfo) and st.name in SAMPLER_ORDER
            probs = np.array(st.probs)
            assert len(probs) == n  # aligned with top (all tokens here)
            assert probs.sum() == pytest.approx(1.0, abs=1e-6)
            assert np.count_nonzero(probs) == st.kept
            dropped = (prev > 0) & (probs == 0)
            assert st.removed_mass == pytest.approx(prev[dropped].sum(), abs=1e-6)
            assert st.removed_raw == pytest.approx(raw[r.top_ids][dropped].sum(), abs=1e-6)
            kept_raw -= st.removed_raw
            prev = probs
        assert kept_raw == pytest.approx(sum(r.p_raw(int(i)) for i in r.ids), abs=1e-6)
        # order of the records follows SAMPLER_ORDER
        names = [st.name for st in r.stages]
        assert names == [nm for nm in SAMPLER_ORDER if nm in names]
        # final probabilities equal the last stage's, and sum to 1
        assert np.allclose(np.array(r.stages[-1].probs), [r.p_final(int(t)) for t in r.top_ids], atol=1e-9)
        assert float(np.sum(r.probs)) == pytest.approx(1.0, abs=1e-9)


def test_top_ids_rank_and_lookups():
    rng = np.random.default_rng(2)
    v = rng.normal(0, 1, 5000).astype(np.float32)
    r = apply_chain(v, SamplerSettings(top_n=25))
    expect = np.argsort(-v, kind="stable")[:25]
    assert r.top_ids.tolist() == expect.tolist()
    assert [r.rank(int(t)) for t in expect[:5]] == [1, 2, 3, 4, 5]
    worst = int(np.argmin(v))
    assert r.rank(worst) == 5000
    assert r.p_raw(worst) == pytest.approx(softmax(v)[worst], rel=1e-5)
    assert r.p_final(worst) == 0.0
    assert r.p_raw(10**9) == 0.0 and r.p_final(-1) == 0.0


def test_rank_from_the_top_n_equals_the_count_over_the_vocabulary():
    """rank() counts within the top-N when the token is there (no pass over the vocabulary);
    ties (coarse logits) share the better rank either way, at the top-N boundary too."""
    rng = np.random.default_rng(5)
    v = np.round(rng.normal(0, 1, 20000), 1).astype(np.float32)  # many ties
    r = apply_chain(v, SamplerSettings(top_n=20))
    for t in list(r.top_ids) + list(np.flatnonzero(v == v[r.top_ids[-1]])) + list(rng.integers(0, 20000, 50)):
        assert r.rank(int(t)) == int(np.count_nonzero(v > v[int(t)])) + 1


def test_top_selection_on_large_vocab_with_ties():
    rng = np.random.default_rng(4)
    v = np.round(rng.normal(0, 3, 262144), 1).astype(np.float32)  # many ties
    for k in (1, 20, 40, 1000, 70000):
        got = sampling._top_desc(v, k)
        expect = np.argsort(-v, kind="stable")[:k]
        assert got.tolist() == expect.tolist(), k
    assert sampling._argsort_desc(v).tolist() == np.argsort(-v, kind="stable").tolist()


def _llama_top_p_keep(v: np.ndarray, p: float) -> int:
    """llama.cpp's top-p on an unsorted array, written as its C loop with float32 scalars."""
    mx = v.max()
    e = np.exp((v - mx).astype(np.float64)).astype(np.float32)
    total = np.float32(0.0)
    for x in e.tolist():  # array (id) order, sequential float32 sum
        total = np.float32(total + np.float32(x))
    cum = np.float32(0.0)
    for i, t in enumerate(np.argsort(-v, kind="stable").tolist()):
        cum = np.float32(cum + e[t] / total)
        if cum >= np.float32(p):
            return i + 1
    return v.shape[0]


def test_large_vocab_top_p_and_min_p_without_top_k():
    rng = np.random.default_rng(8)
    v = rng.normal(0, 1.5, 262144).astype(np.float32)
    v[rng.choice(262144, 20, replace=False)] += 12
    p = softmax(v)
    order = np.argsort(-v, kind="stable")
    r = apply_chain(v, OFF.replace(top_p=0.9))
    n_keep = len(r.ids)
    assert r.ids.tolist() == order[:n_keep].tolist()
    assert n_keep == _llama_top_p_keep(v, 0.9)
    # llama.cpp's float32 normaliser loses part of the tail (tiny addends vanish next to a
    # large running sum), so its boundary comes earlier than the exact float64 one
    exact = int(np.flatnonzero(np.cumsum(p[order]) >= 0.9)[0]) + 1
    assert n_keep < exact
    r = apply_chain(v, OFF.replace(min_p=0.01))
    assert sorted(r.ids.tolist()) == np.flatnonzero(p >= 0.01 * p.max()).tolist()


# ----------------------------------------------------------------------------- draw


def test_draw_is_reproducible_with_the_same_seed():
    rng = np.random.default_rng(0)
    v = _random_case(rng, 2000)
    r = apply_chain(v, SamplerSettings(top_k=0, top_p=0.99, min_p=0.0, temperature=1.5))
    a = [r.draw(np.random.default_rng(42)) for _ in range(3)]
    seq1 = [r.draw(g) for g in [np.random.default_rng(7)] for _ in range(50)]
    g2 = np.random.default_rng(7)
    seq2 = [r.draw(g2) for _ in range(50)]
    assert a[0] == a[1] == a[2]
    assert seq1 == seq2
    assert len(set(seq1)) > 5


def test_draw_follows_the_final_distribution():
    v = f32([0.0, 1.0, 2.0, -9.0, 1.5])
    r = apply_chain(v, OFF.replace(top_k=4))
    g = np.random.default_rng(123)
    counts = np.bincount([r.draw(g) for _ in range(20000)], minlength=5)
    assert counts[3] == 0
    fm = final_map(r)
    for t, pr in fm.items():
        assert counts[t] / 20000 == pytest.approx(pr, abs=0.015)


def test_draw_on_whole_vocabulary_blocks():
    w = np.zeros(262144, dtype=np.float32)
    w[200001] = 1.0
    assert sampling._sample_index(w, 0.0) == 200001
    assert sampling._sample_index(w, 0.999999) == 200001
    w[5] = 1.0
    assert sampling._sample_index(w, 0.25) == 5
    assert sampling._sample_index(w, 0.75) == 200001
    v = np.full(262144, -30.0, dtype=np.float32)
    v[123456] = 30.0
    assert apply_chain(v, OFF).draw(np.random.default_rng(1)) == 123456


# ----------------------------------------------------------------------------- Step


def test_to_step_appends_chosen_token_outside_top():
    v = f32([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    s = SamplerSettings(top_k=0, top_p=1.0, min_p=0.0, temperature=1.0, top_n=3,
                        repeat_penalty=1.1, penalty_last_n=4)
    r = apply_chain(v, s, [0])
    step = r.to_step(5, index=3, position=10, text="x", piece="x",
                     piece_of=lambda t: f"<{t}>", forced=True)
    assert isinstance(step, Step)
    assert [a.id for a in step.top] == [0, 1, 2, 5]
    assert [a.token for a in step.top] == ["<0>", "<1>", "<2>", "<5>"]
    assert step.rank == 6 and step.forced and step.index == 3 and step.position == 10
    assert step.p_raw == pytest.approx(softmax(v)[5], rel=1e-6)
    assert step.top[-1].p_raw == pytest.approx(step.p_raw)
    assert step.top[-1].p_final == pytest.approx(step.p_final)
    for st in step.stages:
        assert len(st.probs) == len(step.top)
    assert step.kept == 6
    assert step.to_dict()["top"][-1]["id"] == 5


def test_to_step_chosen_in_top_and_removed_token():
    v = f32([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    r = apply_chain(v, SamplerSettings(top_k=2, top_n=4, temperature=1.0))
    step = r.to_step(1, index=0, position=0, text="b", piece="b", piece_of=str)
    assert [a.id for a in step.top] == [0, 1, 2, 3]
    assert step.top[2].p_final == 0.0 and step.top[2].p_raw > 0
    assert step.p_final == pytest.approx(softmax([5.0, 4.0])[1], abs=1e-6)
    forced = r.to_step(4, index=0, position=0, text="e", piece="e", piece_of=str, forced=True)
    assert forced.p_final == 0.0 and forced.top[-1].id == 4
    assert forced.stages[0].probs[-1] == 0.0  # top_k dropped it
    assert math.isfinite(forced.surprisal)


# ----------------------------------------------------------------------------- input safety


@pytest.mark.parametrize("settings", [
    SamplerSettings(),
    SamplerSettings(temperature=0.0),
    SamplerSettings(top_k=0, typical_p=0.8, repeat_penalty=1.4, frequency_penalty=0.3,
                    presence_penalty=0.3),
    SamplerSettings(top_k=0, top_p=0.9, min_p=0.0),
    OFF,
])
def test_input_logits_are_not_modified(settings):
    rng = np.random.default_rng(9)
    v = rng.normal(0, 2, 40000).astype(np.float32)
    v.flags.writeable = False  # any in-place write would raise
    keep = v.copy()
    hist = rng.integers(0, 40000, 100).tolist()
    r = apply_chain(v, settings, hist)
    r.to_step(int(hist[0]), index=0, position=0, text="", piece="", piece_of=str)
    r.draw(np.random.default_rng(0))
    assert np.array_equal(v, keep)


def test_result_does_not_depend_on_callers_buffer_afterwards():
    rng = np.random.default_rng(10)
    buf = rng.normal(0, 2, 30000).astype(np.float32)
    view = buf[:]  # like a numpy view of llama.cpp's logits
    r = apply_chain(view, OFF)  # neutral: the final distribution is the raw one
    before = (r.p_raw(5), r.p_final(5), r.probs[5], r.rank(5))
    buf[:] = 0.0  # llama.cpp writes the next step's logits into the same memory
    assert (r.p_raw(5), r.p_final(5), r.probs[5], r.rank(5)) == before


@pytest.mark.parametrize("settings", [
    SamplerSettings(),  # top-k first: the ban is folded into the one pass, no copy
    SamplerSettings(temperature=0.0),
    SamplerSettings(top_k=0),  # top-p on the whole vocabulary: the ban is made in a copy
    SamplerSettings(repeat_penalty=1.3),  # penalties first
], ids=["default", "greedy", "no-top-k", "penalties"])
def test_banned_tokens_read_as_a_banned_copy_of_the_logits(settings):
    rng = np.random.default_rng(21)
    v = rng.normal(0.0, 2.0, 50000).astype(np.float32)
    v[rng.choice(50000, 30, replace=False)] += 12.0
    order = np.argsort(-v)
    banned = [int(order[0]), int(order[3]), 49999]  # the best token, another of the top, one in the tail
    copy = v.copy()
    copy[banned] = np.float32(-1e30)
    hist = [int(order[1]), int(order[2])] * 4
    want = apply_chain(copy, settings, hist, top_n=20)
    got = apply_chain(v, settings, hist, top_n=20, banned=banned)
    assert np.array_equal(got.top_ids, want.top_ids) and int(order[0]) not in got.top_ids.tolist()
    assert got.entropy_raw == pytest.approx(want.entropy_raw, rel=1e-12, abs=1e-12)
    assert got.logsumexp_raw == pytest.approx(want.logsumexp_raw, rel=1e-12)
    assert got.stages == want.stages
    assert np.array_equal(got.ids, want.ids) and np.allclose(got.probs, want.probs, rtol=1e-12, atol=0)
    tok = int(want.draw(np.random.default_rng(3)))
    assert int(got.draw(np.random.default_rng(3))) == tok
    a = got.to_step(tok, index=0, position=0, text="", piece="", piece_of=str)
    b = want.to_step(tok, index=0, position=0, text="", piece="", piece_of=str)
    assert a == b
    assert got.p_raw(banned[0]) == 0.0 and got.rank(banned[0]) == want.rank(banned[0])


def test_the_full_vocabulary_sums_are_llama_cpps_kernels_or_numpy_and_agree(monkeypatch):
    # backends.vec_kernels: llama.cpp's SIMD kernels, checked against numpy when first used
    import subprocess
    import sys

    from backends import vec_kernels

    assert vec_kernels.kernel_note()  # says which arithmetic and why
    rng = np.random.default_rng(5)
    y = rng.normal(-8.0, 3.0, 262145).astype(np.float32)
    y[:3] = (0.0, -1e30, -0.25)
    y = np.minimum(y, np.float32(0.0))
    got = vec_kernels.exp_sums(y)
    e = np.exp(y.astype(np.float64))
    if got is not None:
        assert got[0] == pytest.approx(float(e.sum()), rel=1e-6)
        assert got[1] == pytest.approx(float((e * y).sum()), rel=1e-5)
    assert vec_kernels.exp_sums(y.astype(np.float64)) is None and vec_kernels.exp_sums(y[::2]) is None
    # forced off, the chain's figures are numpy's, within float32 rounding of the kernels'
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    code = ("import numpy as np; from app.core.sampling import softmax_stats; from backends import vec_kernels; "
            "v = np.random.default_rng(5).normal(0, 3, 262144).astype(np.float32); "
            "print(vec_kernels.kernel_note()); print(repr(softmax_stats(v)))")
    env = dict(__import__("os").environ, SAMPLESCOPE_NUMPY_KERNELS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    note, stats = done.stdout.strip().splitlines()
    assert note.startswith("numpy") and "SAMPLESCOPE_NUMPY_KERNELS" in note
    v = np.random.default_rng(5).normal(0, 3, 262144).astype(np.float32)
    lse, ent = softmax_stats(v)
    np_lse, np_ent = eval(stats)
    assert lse == pytest.approx(np_lse, abs=1e-5) and ent == pytest.approx(np_ent, abs=1e-5)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        apply_chain(np.zeros((2, 3), dtype=np.float32), OFF)
    with pytest.raises(ValueError):
        apply_chain(np.full(4, -np.inf, dtype=np.float32), OFF)


def test_benchmark_prints(capsys):
    sampling.benchmark_chain(n_vocab=4096, steps=4)
    out = capsys.readouterr().out
    assert "ms/step" in out and "default" in out and "neutral" in out


def test_history_may_be_list_tuple_array_or_deque():
    from collections import deque

    v = f32([1.0, 2.0, -1.0, 0.5])
    s = OFF.replace(repeat_penalty=1.5, penalty_last_n=2)
    hist = [3, 1, 1, 2]
    expect = apply_chain(v, s, hist).probs
    for h in (tuple(hist), np.array(hist), deque(hist)):
        assert np.array_equal(apply_chain(v, s, h).probs, expect)
    assert not np.allclose(expect, apply_chain(v, s, [3, 3]).probs)


def test_module_imports_neither_qt_nor_llama_cpp():
    import subprocess
    import sys

    code = ("import sys, app.core.sampling; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'llama_cpp', 'shiboken6')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr


def test_sampler_order_reads_llama_cpp_syntax_and_round_trips():
    from backends.base import samplers_from_string, samplers_to_string

    default = "penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature"
    assert samplers_to_string(SAMPLER_ORDER) == default and samplers_from_string(default) == SAMPLER_ORDER
    assert samplers_from_string("Top-K; nucleus ;TEMP") == ("top_k", "top_p", "temperature")
    assert samplers_from_string("kypmxt") == ("top_k", "typical", "top_p", "min_p", "xtc", "temperature")
    with pytest.raises(ValueError, match="unknown sampler 'top_q'"):
        samplers_from_string("top_k;top_q")
    s = SamplerSettings(samplers=("temperature", "top_k"), logit_bias=((3, float("-inf")), ("hi", 1.5)))
    back = SamplerSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and back.order_string == "temperature;top_k"
    with pytest.raises(ValueError, match="unknown sampler"):
        SamplerSettings(samplers=("nope",)).validate()


def test_a_custom_order_is_the_order_of_the_recorded_stages():
    v = np.random.default_rng(3).normal(0, 2, 5000).astype(np.float32)
    s = SamplerSettings(samplers=("temperature", "min_p", "top_k"), temperature=1.5, top_k=10, min_p=0.01)
    r = apply_chain(v, s)
    assert [st.name for st in r.stages] == ["temperature", "min_p", "top_k"] and r.kept == 10
    # temperature first flattens what min_p sees: it keeps more than min_p after temperature would
    later = apply_chain(v, s.replace(samplers=("min_p", "temperature")))
    first = apply_chain(v, s.replace(samplers=("temperature", "min_p")))
    assert first.kept > later.kept


def test_xtc_acts_only_when_its_draw_says_so_and_records_the_draw():
    v = np.array([5.0, 4.5, 4.0, 1.0, 0.0, -1.0], dtype=np.float32)
    s = SamplerSettings(samplers=("xtc",), xtc_probability=0.5, xtc_threshold=0.1, temperature=1.0)
    acted = apply_chain(v, s, xtc_draw=0.2)
    idle = apply_chain(v, s, xtc_draw=0.9)
    assert acted.stages[0].value == 0.2 and idle.stages[0].value == 0.9
    assert idle.kept == 6 and idle.stages[0].removed_mass == 0.0
    # the two most likely of the three above 0.1 are removed; the least likely of them stays
    assert acted.kept == 4 and acted.p_final(0) == 0.0 and acted.p_final(1) == 0.0 and acted.p_final(2) > 0


def test_dynamic_temperature_follows_the_entropy():
    flat = np.zeros(100, dtype=np.float32)
    peaked = np.array([10.0] + [0.0] * 99, dtype=np.float32)
    s = SamplerSettings(samplers=("temperature",), temperature=1.0, dynatemp_range=0.5)
    t_flat = apply_chain(flat, s).stages[0].value
    t_peaked = apply_chain(peaked, s).stages[0].value
    assert t_flat == pytest.approx(1.5, abs=1e-5)  # normalised entropy 1: the top of the range
    assert 0.5 <= t_peaked < 0.7  # nearly certain: near the bottom


def test_a_text_logit_bias_needs_a_tokenizer():
    from backends.base import GenerationError

    with pytest.raises(GenerationError, match="tokenizer"):
        apply_chain(np.zeros(10, dtype=np.float32), SamplerSettings(logit_bias=(("hi", -1.0),)))
