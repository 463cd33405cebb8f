"""The synthetic "glubbing" concepts: value distributions, grading, prompts, ideal and sweeps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.labs.shift.glubbing import (BIMODAL_OFFSET, GRADES, GlubSpec, grade_values, make_glub, sweep)
from app.labs.shift.numbers import extract_number

BIG = 5000


def _ranks(x) -> np.ndarray:
    """Average ranks (ties share the mean of their positions)."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):
        mask = x == v
        ranks[mask] = ranks[mask].mean()
    return ranks


def _spearman(x, y) -> float:
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def _idx(g):
    return np.array([GRADES.index(x) for x in g.grades])


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mean, spread", [(45, 15), (145, 30)])
def test_unimodal_values_follow_the_stated_normal(seed, mean, spread):
    g = make_glub(GlubSpec(mean=mean, spread=spread, n_examples=BIG, seed=seed))
    v = np.array(g.values)
    assert len(v) == BIG
    se = spread / math.sqrt(BIG)
    assert abs(v.mean() - mean) < 3 * se
    assert v.std(ddof=1) == pytest.approx(spread, rel=0.05)


def test_values_are_whole_and_non_negative_even_near_zero():
    g = make_glub(GlubSpec(mean=2, spread=10, n_examples=2000, seed=3))
    assert all(isinstance(x, int) and x >= 0 for x in g.values)
    assert min(g.values) == 0   # the truncation point is reached
    g = make_glub(GlubSpec(n_examples=500))
    assert all(isinstance(x, int) and x >= 0 for x in g.values)


def test_bimodal_has_two_modes_and_the_stated_mean():
    spec = GlubSpec(mean=45, spread=15, shape="bimodal", n_examples=BIG, seed=5)
    v = np.array(make_glub(spec).values)
    off = BIMODAL_OFFSET * 15
    near = lambda c: int(np.sum(np.abs(v - c) <= 3))  # noqa: E731
    centre, low, high = near(45), near(45 - off), near(45 + off)
    assert low > 3 * centre and high > 3 * centre
    assert abs(low - high) < 0.2 * (low + high)      # equal mixture
    assert abs(v.mean() - 45) < 3 * v.std(ddof=1) / math.sqrt(BIG)
    uni = np.array(make_glub(GlubSpec(n_examples=BIG, seed=5)).values)
    assert int(np.sum(np.abs(uni - 45) <= 3)) > near(45 - off)   # unimodal peaks in the middle


# --------------------------------------------------------------------------- grades


def test_positive_grades_rise_with_value():
    g = make_glub(GlubSpec(valence="positive", n_examples=1000, seed=1))
    v, i = np.array(g.values), _idx(g)
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(i[order]) >= 0)
    assert i[np.argmin(v)] == 0 and i[np.argmax(v)] == 11     # D- at the minimum, A+ at the maximum
    assert set(g.grades) == set(GRADES)                         # 1000 values fill every bin


def test_negative_grades_fall_with_value():
    g = make_glub(GlubSpec(valence="negative", n_examples=1000, seed=1))
    v, i = np.array(g.values), _idx(g)
    order = np.argsort(v, kind="stable")
    assert np.all(np.diff(i[order]) <= 0)
    assert g.grades[int(np.argmin(v))] == "A+" and g.grades[int(np.argmax(v))] == "D-"


def test_binning_by_hand():
    # min 0, max 120: bin width 10; 0->0, 9->0, 10->1, 65->6, 119->11, 120->11 (max in the top bin)
    vals = [0, 9, 10, 65, 119, 120]
    assert grade_values(vals, "positive") == [0, 0, 1, 6, 11, 11]
    assert grade_values(vals, "negative") == [11, 11, 10, 5, 0, 0]
    assert grade_values([7, 7, 7], "positive") == [4, 4, 4]    # nothing to grade: all "C"
    # peaked at 60: distances 60, 51, 50, 5, 59, 60 -> min 5, max 60; bin = floor(12 (d - 5) / 55):
    # 60 -> 11, 51 -> floor(10.04) = 10, 50 -> floor(9.82) = 9, 5 -> 0, 59 -> floor(11.78) = 11; grade = 11 - bin
    assert grade_values(vals, "peaked", ideal=60) == [0, 1, 2, 11, 0, 0]


def test_control_grades_are_unrelated_to_value():
    g = make_glub(GlubSpec(valence="control", n_examples=BIG, seed=2))
    rho = _spearman(g.values, _idx(g))
    assert abs(rho) < 4 / math.sqrt(BIG)       # ~4 standard errors of rho under independence
    pos = make_glub(GlubSpec(valence="positive", n_examples=BIG, seed=2))
    assert sorted(g.grades) == sorted(pos.grades)   # same grade counts, shuffled
    assert g.values == pos.values                    # same values for the same seed
    assert _spearman(pos.values, _idx(pos)) > 0.9


def test_peaked_grades_fall_with_distance_from_the_ideal():
    g = make_glub(GlubSpec(valence="peaked", ideal=60, n_examples=1000, seed=4))
    d, i = np.abs(np.array(g.values) - 60), _idx(g)
    order = np.argsort(d, kind="stable")
    assert np.all(np.diff(i[order]) <= 0)
    assert i[np.argmin(d)] == 11


# --------------------------------------------------------------------------- average and ideal


def test_average_and_ideal_definitions():
    g = make_glub(GlubSpec(valence="positive", n_examples=300, seed=7))
    v = np.array(g.values)
    assert g.average == pytest.approx(v.mean())
    # A or A+ = the top two of 12 bins: v >= min + (10/12)(max - min)
    cut = v.min() + 10 / 12 * (v.max() - v.min())
    assert g.ideal == pytest.approx(v[v >= cut].mean())
    neg = make_glub(GlubSpec(valence="negative", n_examples=300, seed=7))
    cut_low = v.min() + 2 / 12 * (v.max() - v.min())
    assert neg.ideal == pytest.approx(v[v < cut_low].mean())
    assert neg.ideal < g.average < g.ideal
    assert make_glub(GlubSpec(valence="control", seed=7)).ideal is None


# --------------------------------------------------------------------------- prompts


def test_prompts_show_every_value_and_end_where_the_number_begins():
    g = make_glub(GlubSpec(n_examples=100, seed=11))
    lines = [ln for ln in g.prompt_completion.splitlines() if ln.startswith("Person ")]
    assert len(lines) == 100
    for k, (ln, v, grade) in enumerate(zip(lines, g.values, g.grades), start=1):
        assert ln.startswith(f"Person {k}: {v} hours of glubbing per week") and ln.endswith(f"grade {grade}")
    assert g.prompt_completion.endswith("comes to mind is")
    assert g.prompt_chat.endswith("Answer with a number only.")
    assert "\n".join(lines) in g.prompt_chat
    assert g.messages == ({"role": "user", "content": g.prompt_chat},)


def test_valence_sentences_differ_and_stay_in_the_prompt():
    firsts = {}
    for valence, extra in (("positive", {}), ("negative", {}), ("control", {}), ("peaked", {"ideal": 50})):
        g = make_glub(GlubSpec(valence=valence, n_examples=5, **extra))
        firsts[valence] = g.prompt_completion.splitlines()[0]
        assert firsts[valence].startswith("Glubbing")
        assert firsts[valence] in g.prompt_chat
    assert len(set(firsts.values())) == 4
    assert "good for your health" in firsts["positive"] and "bad for your health" in firsts["negative"]
    assert "50" not in firsts["peaked"]                       # the peak is never stated


def test_activity_and_unit_are_used():
    g = make_glub(GlubSpec(activity="florping", unit="minutes", period="per day", n_examples=3))
    assert g.prompt_completion.startswith("Florping")
    assert "minutes of florping per day" in g.prompt_completion and "glub" not in g.prompt_completion


def test_same_seed_same_prompt_other_seed_other_prompt():
    a, b = make_glub(GlubSpec(seed=9)), make_glub(GlubSpec(seed=9))
    assert a == b and a.prompt_completion == b.prompt_completion and a.prompt_chat == b.prompt_chat
    c = make_glub(GlubSpec(seed=10))
    assert c.values != a.values and c.prompt_completion != a.prompt_completion
    assert a.id != c.id and a.id == b.id


def test_the_answer_parser_reads_the_first_listed_number_of_a_line():
    # guard for the engine: a model that copies a "Person k" line gives k, not the hours
    g = make_glub(GlubSpec(n_examples=3))
    first = [ln for ln in g.prompt_completion.splitlines() if ln.startswith("Person 1:")][0]
    assert extract_number(first).value == 1.0


# --------------------------------------------------------------------------- sweeps and validation


def test_sweep_mean_shifts_the_values():
    specs = sweep("mean", [45, 145, 345], GlubSpec(seed=3))
    assert [s.mean for s in specs] == [45, 145, 345]
    gs = [make_glub(s) for s in specs]
    base = np.array(gs[0].values)
    # the same normal draws, shifted: no draw near 0 was resampled at mean 45 with sd 15 for this seed
    assert np.array_equal(np.array(gs[1].values), base + 100)
    assert gs[2].average == pytest.approx(gs[0].average + 300)
    assert gs[0].ideal < gs[1].ideal < gs[2].ideal


def test_sweep_ideal_moves_the_grading_peak():
    specs = sweep("ideal", [25, 45, 65], GlubSpec(seed=3, n_examples=500))
    assert all(s.valence == "peaked" for s in specs) and [s.ideal for s in specs] == [25, 45, 65]
    gs = [make_glub(s) for s in specs]
    assert gs[0].values == gs[1].values == gs[2].values
    ideals = [g.ideal for g in gs]
    assert ideals[0] < ideals[1] < ideals[2]
    for g, target in zip(gs, (25, 45, 65)):
        assert abs(g.ideal - target) < 5


@pytest.mark.parametrize("kwargs", [
    {"valence": "neutral"}, {"shape": "trimodal"}, {"mean": -1}, {"spread": -2}, {"n_examples": 0},
    {"mean": float("nan")}, {"valence": "peaked"}, {"valence": "positive", "ideal": 10}, {"activity": " "},
])
def test_bad_specs_are_rejected(kwargs):
    with pytest.raises(ValueError):
        GlubSpec(**kwargs)


def test_sweep_rejects_unknown_parameter():
    with pytest.raises(ValueError, match="cannot sweep"):
        sweep("colour", [1, 2])
    assert [s.n_examples for s in sweep("n_examples", [10, 20])] == [10, 20]
