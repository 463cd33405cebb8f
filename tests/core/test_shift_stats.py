"""alpha_hat, the exact binomial test and the concept-set summary of the shift lab, against
hand-computed values (arithmetic in comments) and brute-force enumeration."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from app.labs.shift.stats import (A_EQUALS_I, ConceptResult, alpha, alpha_hat, binomial_p, concept_result,
                                  distribution_mean, fit_line, pearson_r, summarise)

# --------------------------------------------------------------------------- alpha, alpha_hat


def test_poster_phone_wait():
    # A=11.3, I=3.1, S=3.4: alpha = (11.3 - 3.4) * sign(8.2) = 7.9; alpha_hat = 7.9 / 8.2 = 0.96341
    assert alpha(11.3, 3.1, 3.4) == pytest.approx(7.9)
    assert alpha_hat(11.3, 3.1, 3.4) == pytest.approx(0.963, abs=5e-4)
    assert alpha_hat(11.3, 3.1, 3.4) == pytest.approx(7.9 / 8.2)


def test_poster_exercise():
    # A=7.5, I=10.5, S=10: alpha = (7.5 - 10) * sign(-3) = 2.5; alpha_hat = 2.5 / 3 = 0.8333
    assert alpha(7.5, 10.5, 10) == pytest.approx(2.5)
    assert alpha_hat(7.5, 10.5, 10) == pytest.approx(0.833, abs=5e-4)


def test_poster_sugary_drinks():
    # A=8.6, I=0, S=4.5: alpha = 4.1; alpha_hat = 4.1 / 8.6 = 0.47674
    assert alpha(8.6, 0, 4.5) == pytest.approx(4.1)
    assert alpha_hat(8.6, 0, 4.5) == pytest.approx(0.477, abs=5e-4)


def test_alpha_hat_landmarks():
    assert alpha_hat(10, 20, 10) == 0.0          # at the average
    assert alpha_hat(10, 20, 20) == 1.0          # at the ideal
    assert alpha_hat(10, 20, 25) == 1.5          # beyond the ideal
    assert alpha_hat(10, 20, 5) == -0.5          # away from the ideal
    assert alpha_hat(20, 10, 5) == 1.5           # same, ideal below the average
    assert math.isnan(alpha_hat(5, 5, 7)) and alpha(5, 5, 7) == 0.0


# --------------------------------------------------------------------------- concept_result


def test_concept_result_kept():
    r = concept_result("phone", "phone wait", "public services", 11.3, 3.1, 3.4)
    assert r.kept and r.reason is None
    assert r.alpha == pytest.approx(7.9) and r.alpha_hat == pytest.approx(7.9 / 8.2)
    assert (r.A, r.I, r.S) == (11.3, 3.1, 3.4)


def test_concept_result_a_equals_i():
    r = concept_result("c", "n", "d", 5.0, 5.0, 7.0)
    assert not r.kept and r.reason == A_EQUALS_I and r.alpha_hat is None and r.alpha == 0.0
    # within the relative tolerance: 1e-12 apart on a scale of 1e6
    r = concept_result("c", "n", "d", 1e6, 1e6 + 1e-6, 7.0)
    assert r.reason == A_EQUALS_I
    assert concept_result("c", "n", "d", 5.0, 5.001, 7.0).kept


def test_concept_result_parse_failures_name_each_value():
    r = concept_result("c", "n", "d", None, 3.0, None, a_error="no number in the answer")
    assert not r.kept and r.alpha is None and r.alpha_hat is None
    assert r.reason == "average could not be parsed: no number in the answer; sample could not be parsed: no value"
    r = concept_result("c", "n", "d", 1.0, float("nan"), 2.0)
    assert r.reason.startswith("ideal could not be parsed") and r.I is None
    r = concept_result("c", "n", "d", 1.0, 2.0, None, s_error="the answer is empty")
    assert r.reason == "sample could not be parsed: the answer is empty"


def test_concept_result_to_dict_is_json():
    r = concept_result("c", "n", "d", None, 3.0, 1.0)
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["A"] is None and d["kept"] is False


# --------------------------------------------------------------------------- binomial test


def _pmf(j: int, n: int, p: Fraction) -> Fraction:
    return math.comb(n, j) * p**j * (1 - p) ** (n - j)


def _brute(k: int, n: int, p: Fraction, alternative: str) -> float:
    probs = [_pmf(j, n, p) for j in range(n + 1)]
    if alternative == "greater":
        return float(sum(probs[k:]))
    if alternative == "less":
        return float(sum(probs[: k + 1]))
    return float(min(1, sum(q for q in probs if q <= probs[k])))


def test_worked_example_255_of_410():
    assert 255 / 410 == pytest.approx(0.622, abs=5e-4)
    p = binomial_p(255, 410, 0.5, "greater")
    assert f"{p:.3e}" == "4.496e-07"
    # p = 0.5 is symmetric: the two-sided p doubles the one-sided one
    assert binomial_p(255, 410, 0.5, "two-sided") == pytest.approx(2 * p, rel=1e-9)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 10, 17])
@pytest.mark.parametrize("p", [Fraction(1, 2), Fraction(3, 10), Fraction(9, 10)])
def test_small_n_matches_brute_force(n, p):
    for k in range(n + 1):
        for alt in ("greater", "less", "two-sided"):
            assert binomial_p(k, n, float(p), alt) == pytest.approx(_brute(k, n, p, alt), rel=1e-9, abs=1e-15), \
                (k, n, p, alt)


def test_symmetric_cases():
    # k = n / 2 with p = 1/2: every outcome is at most as likely as the mode -> two-sided p = 1
    assert binomial_p(5, 10, 0.5, "two-sided") == pytest.approx(1.0)
    # mirror images
    for k in range(21):
        assert binomial_p(k, 20, 0.5, "greater") == pytest.approx(binomial_p(20 - k, 20, 0.5, "less"), rel=1e-12)
    # 10 of 10: (1/2)^10 = 1/1024 one-sided, 2/1024 two-sided
    assert binomial_p(10, 10, 0.5, "greater") == pytest.approx(1 / 1024)
    assert binomial_p(10, 10, 0.5, "two-sided") == pytest.approx(2 / 1024)
    assert binomial_p(0, 10, 0.5, "greater") == 1.0


def test_large_n_in_log_space():
    n = 100_000
    # P(X >= n/2) = 1/2 + pmf(n/2)/2 and pmf(n/2) ~ sqrt(2 / (pi n)) (1 - 1/(4n)) (Stirling)
    mode = math.sqrt(2 / (math.pi * n)) * (1 - 1 / (4 * n))
    assert binomial_p(n // 2, n, 0.5, "greater") == pytest.approx(0.5 + mode / 2, rel=1e-8)
    # far in the tail the p-value is tiny but not 0 / nan
    tiny = binomial_p(52_000, n, 0.5, "greater")
    assert 0 < tiny < 1e-30
    # greater + less = 1 + P(X = k)
    g, le = binomial_p(50_100, n, 0.5, "greater"), binomial_p(50_100, n, 0.5, "less")
    assert 1 < g + le < 1 + mode


def test_degenerate_p():
    assert binomial_p(0, 5, 0.0, "less") == 1.0 and binomial_p(1, 5, 0.0, "greater") == 0.0
    assert binomial_p(5, 5, 1.0, "greater") == 1.0 and binomial_p(4, 5, 1.0, "less") == 0.0


@pytest.mark.parametrize("args", [(-1, 5), (6, 5), (2.5, 5), (1, 5, 1.5), (1, 5, 0.5, "bigger")])
def test_binomial_rejects_bad_input(args):
    with pytest.raises(ValueError):
        binomial_p(*args)


# --------------------------------------------------------------------------- r and line


def test_pearson_and_fit_line_hand_cases():
    # y = 2x + 1 exactly: r = 1, slope 2, intercept 1
    assert pearson_r([0, 1, 2], [1, 3, 5]) == pytest.approx(1.0)
    assert fit_line([0, 1, 2], [1, 3, 5]) == pytest.approx((2.0, 1.0))
    # x = (0, 1, 2), y = (0, 2, 1): mean x 1, mean y 1; sxy = (-1)(-1) + 0 + (1)(0) = 1, sxx = 2, syy = 2
    # r = 1 / sqrt(2 * 2) = 0.5; slope = 1/2; intercept = 1 - 0.5 * 1 = 0.5
    assert pearson_r([0, 1, 2], [0, 2, 1]) == pytest.approx(0.5)
    assert fit_line([0, 1, 2], [0, 2, 1]) == pytest.approx((0.5, 0.5))
    assert pearson_r([0, 1, 2], [2, 1, 0]) == pytest.approx(-1.0)


def test_pearson_and_fit_line_undefined():
    assert math.isnan(pearson_r([1], [2])) and math.isnan(pearson_r([], []))
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3])) and math.isnan(pearson_r([1, 2, 3], [4, 4, 4]))
    assert all(math.isnan(v) for v in fit_line([3, 3], [1, 2]))
    with pytest.raises(ValueError):
        pearson_r([1, 2], [1, 2, 3])


# --------------------------------------------------------------------------- summarise


def _poster_results():
    return [
        concept_result("phone", "phone wait", "public services", 11.3, 3.1, 3.4),
        concept_result("exercise", "exercise", "health", 7.5, 10.5, 10),
        concept_result("sugar", "sugary drinks", "health", 8.6, 0, 4.5),
        concept_result("same", "same", "work", 4, 4, 6),
        concept_result("bad", "bad", "work", None, 4, 6, a_error="no number in the answer"),
    ]


def test_summarise_poster_examples():
    s = summarise(_poster_results())
    assert (s.n_total, s.n_used, s.n_dropped, s.n_positive) == (5, 3, 2, 3)
    assert s.dropped == (("same", "A equals I"), ("bad", "average could not be parsed: no number in the answer"))
    assert s.fraction == 1.0
    assert s.p_one_sided == pytest.approx(1 / 8) and s.p_two_sided == pytest.approx(2 / 8)
    ah = [7.9 / 8.2, 2.5 / 3, 4.1 / 8.6]
    assert s.mean_alpha_hat == pytest.approx(sum(ah) / 3) and s.median_alpha_hat == pytest.approx(2.5 / 3)
    x = [3.1 - 11.3, 10.5 - 7.5, 0 - 8.6]       # I - A
    y = [3.4 - 11.3, 10 - 7.5, 4.5 - 8.6]       # S - A
    assert s.r == pytest.approx(np.corrcoef(x, y)[0, 1])
    slope, intercept = np.polyfit(x, y, 1)
    assert (s.slope, s.intercept) == pytest.approx((slope, intercept))
    assert s.r > 0.9 and 0 < s.slope < 1


def test_summarise_counts_zero_and_negative_as_not_positive():
    rs = [concept_result("a", "a", "d", 10, 20, 10),     # alpha_hat 0
          concept_result("b", "b", "d", 10, 20, 5),      # -0.5
          concept_result("c", "c", "d", 10, 20, 15)]     # 0.5
    s = summarise(rs)
    assert s.n_positive == 1 and s.fraction == pytest.approx(1 / 3)
    assert s.p_one_sided == pytest.approx(7 / 8)        # P(X >= 1), n = 3


def test_summarise_empty_and_to_dict():
    s = summarise([concept_result("x", "x", "d", 1, 1, 1)])
    assert s.n_used == 0 and math.isnan(s.fraction) and math.isnan(s.r) and s.p_one_sided == 1.0
    d = s.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert d["fraction"] is None and d["r"] is None and d["mean_alpha_hat"] is None
    assert d["dropped"] == [{"concept_id": "x", "reason": "A equals I"}]
    assert json.loads(text)["n_total"] == 1
    full = summarise(_poster_results()).to_dict()
    json.dumps(full, allow_nan=False)
    assert full["n_positive"] == 3


def test_results_are_frozen():
    r = _poster_results()[0]
    assert isinstance(r, ConceptResult)
    with pytest.raises(Exception):
        r.kept = False


# --------------------------------------------------------------------------- distribution_mean


def test_distribution_mean():
    # weights 0.1, 0.2, 0.1 on 1, 2, 3: (0.1 + 0.4 + 0.3) / 0.4 = 2.0, covered mass 0.4
    m = distribution_mean([1, 2, 3], [0.1, 0.2, 0.1])
    assert m.mean == pytest.approx(2.0) and m.mass == pytest.approx(0.4)
    mean, mass = distribution_mean([10, 0], [3, 1])     # counts: (30 + 0) / 4
    assert mean == pytest.approx(7.5) and mass == 4
    assert distribution_mean([5, 5, 7], [0.25, 0.25, 0.5]).mean == pytest.approx(6.0)  # repeats add up
    empty = distribution_mean([], [])
    assert math.isnan(empty.mean) and empty.mass == 0.0
    assert math.isnan(distribution_mean([1, 2], [0, 0]).mean)


@pytest.mark.parametrize("values, probs", [([1, 2], [0.5]), ([1], [-0.1]), ([1], [float("nan")]),
                                           ([float("inf")], [1.0])])
def test_distribution_mean_rejects_bad_input(values, probs):
    with pytest.raises(ValueError):
        distribution_mean(values, probs)
