"""Measures of the P_token vs P_task lab, checked against values worked out by hand."""

import json
import math

import numpy as np
import pytest

from app.labs.align.measures import (
    Thresholds,
    diversity_across_runs,
    measure_run,
    p_token_over_outcomes,
    summary,
    verdict,
)
from app.labs.align.task import PRESETS, make_task

LN = math.log
TWO = make_task("two", {"a": 0.25, "b": 0.75})
EXT = PRESETS["extreme"]  # 1: .1, 2: .7, 3: .1, 4: .1

# --------------------------------------------------------------------------- one step


def test_p_token_sums_per_outcome_and_renormalises():
    p, outside = p_token_over_outcomes({"1": [0.2, 0.1], "2": [0.3], "3": [0.0], "4": 0.1})
    # sums 0.3, 0.3, 0, 0.1 -> total 0.7
    assert p == pytest.approx([3 / 7, 3 / 7, 0.0, 1 / 7], abs=1e-15)
    assert outside == pytest.approx(0.3, abs=1e-15)


def test_p_token_follows_the_given_outcome_order():
    probs = {"1": [0.1], "2": [0.2], "3": [0.3], "4": [0.4]}
    p, outside = p_token_over_outcomes(probs, outcomes=("4", "3", "2", "1"))
    assert p == pytest.approx([0.4, 0.3, 0.2, 0.1]) and outside == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match=r"missing \['4'\]"):
        p_token_over_outcomes({"1": [0.1], "2": [0.2], "3": [0.3]}, outcomes=EXT.outcomes)
    with pytest.raises(ValueError, match=r"unexpected \['5'\]"):
        p_token_over_outcomes({**probs, "5": [0.0]}, outcomes=EXT.outcomes)


def test_p_token_zero_total_is_undefined_not_uniform():
    p, outside = p_token_over_outcomes({"a": [0.0, 0.0], "b": []})
    assert np.isnan(p).all() and p.shape == (2,) and outside == 1.0


def test_p_token_rejects_bad_values_and_overlap():
    with pytest.raises(ValueError, match="not a probability"):
        p_token_over_outcomes({"a": [-0.1], "b": [0.2]})
    with pytest.raises(ValueError, match="not a probability"):
        p_token_over_outcomes({"a": [math.nan], "b": [0.2]})
    with pytest.raises(ValueError, match="overlap"):
        p_token_over_outcomes({"a": [0.6], "b": [0.5]})
    # float error just above 1 is tolerated and clamped
    p, outside = p_token_over_outcomes({"a": [0.5], "b": [0.5 + 1e-9]})
    assert outside == 0.0 and p.sum() == pytest.approx(1.0)


# --------------------------------------------------------------------------- one run

# P_task = (1/4, 3/4); three steps written out by hand.
S0, S1, S2 = [0.5, 0.5], [0.25, 0.75], [1.0, 0.0]


def _js(p, q):
    m = [(x + y) / 2 for x, y in zip(p, q)]
    half = lambda a: sum(x * LN(x / y) for x, y in zip(a, m) if x > 0)  # noqa: E731
    return half(p) / 2 + half(q) / 2


def test_measure_run_per_step_values_by_hand():
    run = measure_run(TWO, [(np.array(S0), 0.1), (np.array(S1), 0.0), (np.array(S2), 0.2)], ["a", "b", "b"])
    s0, s1, s2 = run.steps
    # step 0: P_token (1/2, 1/2) against P_task (1/4, 3/4)
    kl0 = 0.5 * LN(0.5 / 0.25) + 0.5 * LN(0.5 / 0.75)
    js0 = 0.5 * (0.5 * LN(0.5 / 0.375) + 0.5 * LN(0.5 / 0.625)) \
        + 0.5 * (0.25 * LN(0.25 / 0.375) + 0.75 * LN(0.75 / 0.625))
    assert s0.kl_to_task == pytest.approx(kl0, abs=1e-8)
    assert s0.js_to_task == pytest.approx(js0, abs=1e-12) == pytest.approx(_js(S0, [0.25, 0.75]))
    assert s0.tv_to_task == pytest.approx(0.25)
    assert s0.max_prob == 0.5 and s0.entropy == pytest.approx(LN(2))
    assert s0.tv_to_previous is None and s0.drawn == "a" and s0.mass_outside == 0.1
    # step 1: equal to P_task
    assert s1.kl_to_task == pytest.approx(0.0, abs=1e-8) and s1.js_to_task == pytest.approx(0.0, abs=1e-12)
    assert s1.tv_to_task == 0.0 and s1.max_prob == 0.75
    assert s1.entropy == pytest.approx(-(0.25 * LN(0.25) + 0.75 * LN(0.75)))
    assert s1.tv_to_previous == pytest.approx(0.5 * (0.25 + 0.25))
    # step 2: all mass on "a"
    kl2 = 1.0 * LN(1.0 / 0.25)
    js2 = 0.5 * (1.0 * LN(1.0 / 0.625)) + 0.5 * (0.25 * LN(0.25 / 0.625) + 0.75 * LN(0.75 / 0.375))
    assert s2.kl_to_task == pytest.approx(kl2, abs=1e-8) and s2.js_to_task == pytest.approx(js2, abs=1e-12)
    assert s2.tv_to_task == pytest.approx(0.75) and s2.max_prob == 1.0 and s2.entropy == 0.0
    assert s2.tv_to_previous == pytest.approx(0.5 * (0.75 + 0.75)) and s2.drawn == "b"
    # means over the three steps
    assert run.mean_kl == pytest.approx((kl0 + 0.0 + kl2) / 3, abs=1e-8)
    assert run.mean_js == pytest.approx((js0 + js2) / 3, abs=1e-12)
    assert run.mean_tv == pytest.approx((0.25 + 0.0 + 0.75) / 3)
    assert run.mean_variability == pytest.approx((0.25 + 0.75) / 2)
    assert run.mean_max_prob == pytest.approx((0.5 + 0.75 + 1.0) / 3)
    assert run.mean_entropy == pytest.approx((LN(2) + s1.entropy + 0.0) / 3)
    assert run.mean_mass_outside == pytest.approx((0.1 + 0.0 + 0.2) / 3)
    assert run.n_steps == 3 and run.n_undefined_steps == 0 and run.problems == ()


def test_p_result_and_its_distance_by_hand():
    run = measure_run(TWO, [(S1, 0.0)] * 3, ["a", "b", "b"])
    assert run.p_result == pytest.approx((1 / 3, 2 / 3)) and run.n_draws == 3
    assert run.result_tv == pytest.approx(0.5 * (abs(1 / 3 - 1 / 4) + abs(2 / 3 - 3 / 4)))
    kl_result = (1 / 3) * LN((1 / 3) / (1 / 4)) + (2 / 3) * LN((2 / 3) / (3 / 4))
    assert run.result_kl == pytest.approx(kl_result, abs=1e-8)


def test_kl_direction_is_p_token_to_p_task():
    # P_token puts nothing on "a": KL(P_token || P_task) = ln(1 / 0.75) is finite,
    # while KL(P_task || P_token) would be infinite.
    run = measure_run(TWO, [([0.0, 1.0], 0.0)])
    assert run.steps[0].kl_to_task == pytest.approx(LN(1 / 0.75), abs=1e-8)


def test_unnormalised_step_is_renormalised():
    run = measure_run(TWO, [([1.0, 3.0], 0.0)])
    assert run.steps[0].p_token == pytest.approx((0.25, 0.75)) and run.steps[0].tv_to_task == pytest.approx(0)


def test_undefined_steps_are_left_out_and_reported():
    nan = [math.nan, math.nan]
    run = measure_run(TWO, [(S0, 0.0), (nan, 1.0), (S2, 0.0), ([0.0, 0.0], 1.0)], ["a", "a", "a", "a"])
    s0, s1, s2, s3 = run.steps
    assert not s1.defined and not s3.defined and s0.defined and s2.defined
    assert all(math.isnan(x) for x in (s1.kl_to_task, s1.tv_to_task, s1.entropy, s1.max_prob, s3.js_to_task))
    assert math.isnan(s1.tv_to_previous) and math.isnan(s2.tv_to_previous)  # no neighbour to compare
    assert run.mean_tv == pytest.approx((0.25 + 0.75) / 2)  # only the defined steps
    assert math.isnan(run.mean_variability)
    assert run.mean_mass_outside == pytest.approx(0.5)  # every step counts here
    assert run.n_undefined_steps == 2
    assert any("2 of 4 steps put no probability" in p for p in run.problems)


def test_draw_count_mismatch_and_no_draws():
    run = measure_run(TWO, [(S0, 0.0), (S1, 0.0)], ["b"], problems=["item 2: 'x' is not an outcome"])
    assert run.steps[0].drawn == "b" and run.steps[1].drawn is None
    assert run.problems[0] == "item 2: 'x' is not an outcome"
    assert any("1 draws parsed for 2 scored steps" in p for p in run.problems)
    empty = measure_run(TWO, [(S0, 0.0)], [])
    assert all(math.isnan(x) for x in empty.p_result) and math.isnan(empty.result_tv)
    assert any("no draws parsed" in p for p in empty.problems)
    none = measure_run(TWO, [(S0, 0.0)], None)
    assert none.problems == () and none.draws == () and math.isnan(none.result_kl)


def test_measure_run_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        measure_run(TWO, [([0.2, 0.3, 0.5], 0.0)])
    with pytest.raises(ValueError, match="mass_outside"):
        measure_run(TWO, [(S0, 1.5)])
    with pytest.raises(ValueError, match="mass_outside"):
        measure_run(TWO, [(S0, math.nan)])
    with pytest.raises(ValueError, match="all NaN"):
        measure_run(TWO, [([0.5, math.nan], 0.0)])
    with pytest.raises(ValueError, match="not an outcome"):
        measure_run(TWO, [(S0, 0.0)], ["c"])


def test_p_token_feeds_measure_run():
    step = p_token_over_outcomes({"a": [0.05, 0.05], "b": [0.3]}, outcomes=TWO.outcomes)
    run = measure_run(TWO, [step])
    assert run.steps[0].p_token == pytest.approx((0.25, 0.75)) and run.steps[0].mass_outside == pytest.approx(0.6)


# --------------------------------------------------------------------------- across runs


def test_diversity_by_hand():
    runs = [["1", "2", "3"], ["1", "3", "3", "4"], ["2", "2"]]
    # pairs: (0,1) over 3 positions, 1 differs -> 1/3; (0,2) over 2, 1 differs -> 1/2;
    # (1,2) over 2, both differ -> 1
    assert diversity_across_runs(runs) == pytest.approx((1 / 3 + 1 / 2 + 1) / 3)
    assert diversity_across_runs([["1", "2"], ["1", "2"]]) == 0.0
    assert diversity_across_runs([["1", "2"], ["2", "1"]]) == 1.0


def test_diversity_edge_cases():
    assert math.isnan(diversity_across_runs([]))
    assert math.isnan(diversity_across_runs([["1", "2"]]))
    assert math.isnan(diversity_across_runs([[], ["1"]]))
    assert diversity_across_runs([[], ["1"], ["2"]]) == 1.0  # the pairs with the empty run are skipped


# --------------------------------------------------------------------------- verdict


def _run(steps, task=EXT, mass=0.0):
    return measure_run(task, [(np.array(s, dtype=float), mass) for s in steps])


STEADY_CLOSE = [[0.12, 0.66, 0.11, 0.11], [0.1, 0.7, 0.1, 0.1]] * 3       # TV 0.04 / 0, variability 0.04
SWINGING_FAR = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]] * 3           # TV 0.9, variability 1
STEADY_FAR = [[0.0, 1.0, 0.0, 0.0]] * 4                                   # TV 0.3, variability 0
SWINGING_CLOSE = [[0.1, 0.9, 0.0, 0.0], [0.1, 0.5, 0.2, 0.2]] * 3         # TV 0.2, variability 0.4


def test_verdict_e_model():
    v = verdict(_run(STEADY_CLOSE))
    assert v.label == "E-model"
    assert v.mean_tv == pytest.approx((0.04 + 0.0) / 2) and v.variability == pytest.approx(0.04)
    assert "mean TV(P_token, P_task) = 0.020 <= 0.25: close to the task" in v.reasons
    assert "variability (mean TV between consecutive steps) = 0.040 <= 0.15: steady" in v.reasons


def test_verdict_d_model():
    v = verdict(_run(SWINGING_FAR))
    assert v.label == "D-model" and v.mean_tv == pytest.approx(0.9) and v.variability == pytest.approx(1.0)
    assert any("0.900 > 0.25: far" in r for r in v.reasons) and any("1.000 > 0.15: swinging" in r for r in v.reasons)


def test_verdict_between_both_ways_and_editable_thresholds():
    far = verdict(_run(STEADY_FAR))
    assert far.label == "between" and far.mean_tv == pytest.approx(0.3) and far.variability == 0.0
    swing = verdict(_run(SWINGING_CLOSE))
    assert swing.label == "between" and swing.mean_tv == pytest.approx(0.2) and swing.variability == pytest.approx(0.4)
    assert verdict(_run(STEADY_FAR), Thresholds(max_mean_tv=0.35)).label == "E-model"
    assert verdict(_run(SWINGING_CLOSE), Thresholds(max_variability=0.5)).label == "E-model"
    # at the threshold counts as under it
    assert verdict(_run(STEADY_FAR), Thresholds(max_mean_tv=0.3)).label == "E-model"


def test_verdict_undetermined():
    one_step = verdict(_run([[0.1, 0.7, 0.1, 0.1]]))
    assert one_step.label == "undetermined" and any("variability is unknown" in r for r in one_step.reasons)
    nothing = verdict(measure_run(EXT, [([math.nan] * 4, 1.0)] * 3))
    assert nothing.label == "undetermined" and any("distance to P_task is unknown" in r for r in nothing.reasons)


def test_verdict_warns_about_mass_outside():
    v = verdict(_run(STEADY_CLOSE, mass=0.8))
    assert v.label == "E-model" and any(r.startswith("warning: on average 80%") for r in v.reasons)
    assert not any(r.startswith("warning") for r in verdict(_run(STEADY_CLOSE, mass=0.4)).reasons)


def test_pooled_verdict_never_pairs_steps_across_runs():
    a = _run([[1.0, 0.0, 0.0, 0.0]] * 2)
    b = _run([[0.0, 0.0, 1.0, 0.0]] * 2)
    v = verdict([a, b])
    assert v.variability == 0.0 and v.mean_tv == pytest.approx(0.9) and v.label == "between"
    with pytest.raises(ValueError, match="one task"):
        verdict([a, _run([S0], task=TWO)])
    with pytest.raises(ValueError, match="no runs"):
        verdict([])


def test_thresholds_are_validated():
    assert Thresholds() == Thresholds(0.25, 0.15, 0.5)
    for bad in ({"max_mean_tv": -0.1}, {"max_variability": 1.5}, {"warn_mass_outside": math.nan},
                {"max_mean_tv": "0.2"}):
        with pytest.raises(ValueError, match="threshold"):
            Thresholds(**bad)


# --------------------------------------------------------------------------- summary


def test_summary_is_json_safe_and_complete():
    r1 = measure_run(EXT, [(np.array(s), 0.0) for s in STEADY_CLOSE[:2]] + [([math.nan] * 4, 1.0)], ["2", "2", "3"])
    r2 = measure_run(EXT, [(np.array(s), 0.0) for s in STEADY_CLOSE[:3]], ["2", "1", "3"])
    out = summary([r1, r2])
    text = json.dumps(out, allow_nan=False)  # no NaN left anywhere
    assert json.loads(text) == out
    assert out["task"] == {"name": "extreme", "outcomes": {"1": 0.1, "2": 0.7, "3": 0.1, "4": 0.1}, "notes": []}
    assert out["thresholds"] == {"max_mean_tv": 0.25, "max_variability": 0.15, "warn_mass_outside": 0.5}
    assert out["diversity_across_runs"] == pytest.approx(1 / 3)  # position 1 differs of 3
    assert out["verdict"]["label"] == "E-model" and len(out["runs"]) == 2
    first = out["runs"][0]
    assert first["verdict"]["label"] == "E-model" and first["n_undefined_steps"] == 1
    assert first["steps"][2]["p_token"] == [None] * 4 and first["steps"][2]["tv_to_previous"] is None
    assert first["steps"][0]["tv_to_previous"] is None and first["steps"][1]["drawn"] == "2"
    assert first["p_result"] == {"1": 0.0, "2": pytest.approx(2 / 3), "3": pytest.approx(1 / 3), "4": 0.0}


def test_summary_of_one_run():
    out = summary(_run(SWINGING_FAR), Thresholds(max_mean_tv=0.95, max_variability=0.99))
    assert out["diversity_across_runs"] is None  # fewer than two runs
    assert out["verdict"]["label"] == "between" and out["thresholds"]["max_mean_tv"] == 0.95
    assert out["runs"][0]["p_result"] == {"1": None, "2": None, "3": None, "4": None}
    json.dumps(out, allow_nan=False)


def test_verdict_from_pooled_figures_matches_verdict_and_follows_edited_thresholds():
    from app.labs.align.measures import Thresholds, verdict_from

    assert verdict_from(0.1, 0.05, 0.2).label == "E-model"
    assert verdict_from(0.4, 0.3, 0.2).label == "D-model"
    assert verdict_from(0.1, 0.3, 0.2).label == "between"
    assert verdict_from(float("nan"), 0.1, 0.2).label == "undetermined"
    strict = Thresholds(max_mean_tv=0.05, max_variability=0.15)
    v = verdict_from(0.1, 0.05, 0.7, strict)
    assert v.label == "between" and any("0.1" in r and "0.05" in r for r in v.reasons)
    assert any(r.startswith("warning") for r in v.reasons)  # 70% outside > 50%
