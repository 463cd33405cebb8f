"""Metrics of the Verbalized Sampling lab against hand-computed cases (arithmetic in comments)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from app.core import metrics as M
from app.labs.vs.reference import load_us_state_reference

ROOT = Path(__file__).resolve().parents[2]
LN2 = math.log(2)


# --------------------------------------------------------------------------- entropy


def test_entropy_hand_cases():
    # H(1/2, 1/2) = ln 2
    assert M.entropy([0.5, 0.5]) == pytest.approx(LN2, abs=1e-12)
    # a point mass: -1 ln 1 = 0; the zero entry contributes 0 (not nan)
    assert M.entropy([1.0, 0.0]) == 0.0
    # counts [1, 1, 2] -> p = (1/4, 1/4, 1/2): 2 * (1/4) ln 4 + (1/2) ln 2 = ln2 + ln2/2 = 1.5 ln 2
    assert M.entropy([1, 1, 2]) == pytest.approx(1.5 * LN2, abs=1e-12)
    # uniform over 6: ln 6
    assert M.entropy(np.ones(6)) == pytest.approx(math.log(6), abs=1e-12)


@pytest.mark.parametrize("bad", [[-0.1, 1.1], [0.0, 0.0], [math.nan, 1.0], [], [[0.5, 0.5]]])
def test_entropy_rejects_non_distributions(bad):
    with pytest.raises(ValueError):
        M.entropy(bad)


# --------------------------------------------------------------------------- KL, JS, TV


def test_kl_hand_case_and_asymmetry():
    p, q = [0.5, 0.5], [0.25, 0.75]
    # KL(p||q) = .5 ln(.5/.25) + .5 ln(.5/.75) = .5 ln 2 + .5 ln(2/3) = .5 ln(4/3) = 0.1438410
    assert M.kl(p, q, eps=0) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-12)
    # KL(q||p) = .25 ln(.25/.5) + .75 ln(.75/.5) = -.25 ln 2 + .75 ln 1.5 = 0.1308120
    assert M.kl(q, p, eps=0) == pytest.approx(-0.25 * LN2 + 0.75 * math.log(1.5), abs=1e-12)
    assert M.kl(p, q, eps=0) != pytest.approx(M.kl(q, p, eps=0), abs=1e-6)


def test_kl_of_identical_is_zero_and_counts_are_normalised():
    assert M.kl([0.2, 0.3, 0.5], [0.2, 0.3, 0.5], eps=0) == 0.0
    # counts [1, 1] and [1, 3] are the distributions of the hand case above
    assert M.kl([1, 1], [1, 3], eps=0) == pytest.approx(0.5 * math.log(4 / 3), abs=1e-12)


def test_kl_zeros():
    # p_i = 0 terms contribute nothing: KL((1,0) || (.5,.5)) = 1 ln(1/.5) = ln 2
    assert M.kl([1.0, 0.0], [0.5, 0.5], eps=0) == pytest.approx(LN2, abs=1e-12)
    # q_i = 0 where p_i > 0 without smoothing: infinite
    assert M.kl([0.5, 0.5], [1.0, 0.0], eps=0) == math.inf
    # with eps = 0.1, q' = (1.1, 0.1) / 1.2 = (11/12, 1/12):
    # .5 ln(.5 * 12/11) + .5 ln(.5 * 12) = .5 ln(6/11) + .5 ln 6 = .5 ln(36/11) = 0.5928
    assert M.kl([0.5, 0.5], [1.0, 0.0], eps=0.1) == pytest.approx(0.5 * math.log(36 / 11), abs=1e-12)
    # the default tiny eps keeps it finite but large: ln(1/sqrt(eps)) order
    assert 5 < M.kl([0.5, 0.5], [1.0, 0.0]) < math.inf


def test_kl_rejects_misaligned_and_bad_eps():
    with pytest.raises(ValueError):
        M.kl([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError):
        M.kl([0.5, 0.5], [0.5, 0.5], eps=-1)


def test_js_hand_cases_and_symmetry():
    # p = (1, 0), q = (.5, .5), m = (.75, .25)
    # KL(p||m) = ln(1/.75) = ln(4/3); KL(q||m) = .5 ln(.5/.75) + .5 ln(.5/.25) = .5 ln(4/3)
    # JS = .5 ln(4/3) + .25 ln(4/3) = .75 ln(4/3) = 0.215762
    p, q = [1.0, 0.0], [0.5, 0.5]
    assert M.js(p, q) == pytest.approx(0.75 * math.log(4 / 3), abs=1e-12)
    assert M.js(q, p) == pytest.approx(M.js(p, q), abs=1e-15)
    # disjoint supports reach the bound ln 2
    assert M.js([1, 0, 0], [0, 0.5, 0.5]) == pytest.approx(LN2, abs=1e-12)
    assert M.js([0.3, 0.7], [0.3, 0.7]) == 0.0


def test_total_variation_hand_cases():
    # .5 (|.5-.25| + |.5-.75|) = .5 (.25 + .25) = .25
    assert M.total_variation([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25, abs=1e-15)
    assert M.total_variation([0.25, 0.75], [0.5, 0.5]) == pytest.approx(0.25, abs=1e-15)
    assert M.total_variation([1, 0], [0, 1]) == 1.0
    # counts [2, 2, 0] vs [0, 1, 1]: (.5, .5, 0) vs (0, .5, .5): .5 (.5 + 0 + .5) = .5
    assert M.total_variation([2, 2, 0], [0, 1, 1]) == pytest.approx(0.5, abs=1e-15)


# --------------------------------------------------------------------------- semantic diversity


def test_semantic_diversity_hand_case():
    # rows (1,0), (0,1), (1,1): cos = 0, 1/sqrt2, 1/sqrt2; mean = sqrt2/3 = 0.471405
    # 100 (1 - 0.471405) = 52.8595
    e = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert M.semantic_diversity(e) == pytest.approx(100 * (1 - math.sqrt(2) / 3), abs=1e-9)


def test_semantic_diversity_identical_and_scaled_rows_are_zero():
    # cosine ignores length: (2,0,1) and (4,0,2) are the same direction; cos = 1 -> 0
    e = np.array([[2.0, 0.0, 1.0], [4.0, 0.0, 2.0], [2.0, 0.0, 1.0]])
    assert M.semantic_diversity(e) == pytest.approx(0.0, abs=1e-9)


def test_semantic_diversity_clips_negative_similarities():
    # (1,0) vs (-1,0): cos = -1, clipped to 0 -> 100 (1 - 0) = 100 (unclipped would be 200)
    assert M.semantic_diversity(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(100.0)
    # (1,0), (-1,0), (1,0): cos = -1 -> 0, 1, -1 -> 0; mean 1/3 -> 100 (2/3) = 66.67
    # (unclipped: mean -1/3 -> 133.3)
    e = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    assert M.semantic_diversity(e) == pytest.approx(200 / 3)


def test_semantic_diversity_small_and_bad_inputs():
    assert math.isnan(M.semantic_diversity(np.zeros((0, 4))))
    assert math.isnan(M.semantic_diversity(np.array([[1.0, 2.0]])))
    with pytest.raises(ValueError):
        M.semantic_diversity(np.array([1.0, 2.0]))  # 1-D
    with pytest.raises(ValueError):
        M.semantic_diversity(np.array([[1.0, 0.0], [0.0, 0.0]]))  # zero row


# --------------------------------------------------------------------------- ROUGE-L


def test_rouge_l_textbook_example():
    # Lin (2004): reference "police killed the gunman"
    ref = "police killed the gunman".split()
    # "police kill the gunman": LCS = police the gunman = 3; R = P = 3/4 -> F1 = 0.75
    assert M.rouge_l_f1(ref, "police kill the gunman".split()) == pytest.approx(0.75)
    # "the gunman kill police": LCS = "the gunman" = 2; R = P = 2/4 -> F1 = 0.5
    assert M.rouge_l_f1(ref, "the gunman kill police".split()) == pytest.approx(0.5)


def test_rouge_l_unequal_lengths_symmetric():
    a = "the cat sat on the mat".split()  # m = 6
    b = "the cat on mat".split()  # n = 4, a subsequence of a: LCS = 4
    # R = 4/6, P = 4/4: F1 = 2 (1)(2/3) / (5/3) = 0.8 (= 2L/(m+n) = 8/10)
    assert M.rouge_l_f1(a, b) == pytest.approx(0.8)
    assert M.rouge_l_f1(b, a) == pytest.approx(0.8)


def test_rouge_l_no_lowercasing_and_empty():
    # "The" != "the": LCS = "cat" = 1 of 2 -> F1 = 0.5
    assert M.rouge_l_f1(["The", "cat"], ["the", "cat"]) == pytest.approx(0.5)
    # no stemming: "cats" != "cat"
    assert M.rouge_l_f1(["cats"], ["cat"]) == 0.0
    assert M.rouge_l_f1([], ["a"]) == 0.0
    assert M.rouge_l_f1([], []) == 0.0


def _lcs_dp(a, b):
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            dp[i + 1][j + 1] = dp[i][j] + 1 if x == y else max(dp[i][j + 1], dp[i + 1][j])
    return dp[-1][-1]


def test_bit_parallel_lcs_matches_dynamic_programming():
    rng = random.Random(4)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 70))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 70))]
        assert M.lcs_length(a, b) == _lcs_dp(a, b), (a, b)


def test_lexical_similarity():
    # pairs: ("a b","a b") = 1, ("a b","c d") = 0 twice; mean 1/3 -> 33.33
    assert M.lexical_similarity(["a b", "a b", "c d"]) == pytest.approx(100 / 3)
    # identical texts: every pair F1 = 1 -> 100
    assert M.lexical_similarity(["roses are red"] * 4) == pytest.approx(100.0)
    # whitespace tokens: extra spaces and newlines do not matter
    assert M.lexical_similarity(["roses  are\nred", "roses are red"]) == pytest.approx(100.0)
    # textbook pair: 0.75 -> 75
    assert M.lexical_similarity(["police killed the gunman", "police kill the gunman"]) == pytest.approx(75.0)
    assert math.isnan(M.lexical_similarity(["only one"]))


def test_identical_outputs_lexical_100_semantic_0():
    texts = ["a haiku about the sea"] * 5
    emb = np.tile(np.array([[0.3, -0.2, 0.9]]), (5, 1))
    assert M.lexical_similarity(texts) == pytest.approx(100.0)
    assert M.semantic_diversity(emb) == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- distinct-n


def test_distinct_n():
    texts = ["a b a", "a b"]
    # unigrams: a b a a b -> 5 total, {a, b} -> 2/5
    assert M.distinct_n(texts, 1) == pytest.approx(0.4)
    # bigrams: (a b) (b a) | (a b) -> 3 total, 2 distinct -> 2/3 (no bigram across texts)
    assert M.distinct_n(texts, 2) == pytest.approx(2 / 3)
    # trigrams: (a b a) -> 1/1
    assert M.distinct_n(texts, 3) == 1.0
    # no 4-grams at all
    assert math.isnan(M.distinct_n(texts, 4))
    # pooled over texts: the same text twice halves distinct-1: 3 distinct / 6 total
    assert M.distinct_n(["x y z", "x y z"], 1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        M.distinct_n(texts, 0)


# --------------------------------------------------------------------------- ratio


def test_diversity_ratio():
    vs = {"semantic": 20.0, "lexical": 30.0, "distinct_1": 0.5, "only_vs": 1.0, "nan": math.nan}
    direct = {"semantic": 10.0, "lexical": 60.0, "distinct_1": 0.0, "nan": 2.0}
    r = M.diversity_ratio(vs, direct)
    assert list(r) == ["semantic", "lexical", "distinct_1", "nan"]
    assert r["semantic"] == pytest.approx(2.0)  # 20 / 10
    assert r["lexical"] == pytest.approx(0.5)  # 30 / 60
    assert math.isnan(r["distinct_1"])  # Direct is 0
    assert math.isnan(r["nan"])


# --------------------------------------------------------------------------- enumerable questions

VALID = ["California", "Texas", "New York", "Ohio"]
ANSWERS = ["california", "The Texas.", "Texas", "Paris", " new  york!"]


def test_normalise_answer():
    assert M.normalise_answer("  The  NEW york!! ") == "new york"
    assert M.normalise_answer("Washington, D.C.") == "washington dc"
    assert M.normalise_answer("Hawai\u2018i") == "hawaii"
    assert M.normalise_answer("Winston-Salem") == "winston salem"
    assert M.normalise_answer("Theodore") == "theodore"  # only the word "the"
    assert M.normalise_answer("\uff34\uff45\uff58\uff41\uff53") == "texas"  # full-width, NFKC
    once = M.normalise_answer("The  Texas.")
    assert M.normalise_answer(once) == once == "texas"


def test_precision_and_coverage():
    # valid: california, texas, texas, new york; invalid: paris -> 4/5
    assert M.precision(ANSWERS, VALID) == pytest.approx(0.8)
    # distinct valid hit: california, texas, new york -> 3 of 4
    assert M.coverage_n(ANSWERS, VALID) == pytest.approx(0.75)
    assert math.isnan(M.precision([], VALID))
    assert M.coverage_n([], VALID) == 0.0
    assert math.isnan(M.coverage_n(ANSWERS, []))


def test_answer_distribution():
    # 4 valid answers: California 1, Texas 2, New York 1, Ohio 0
    d = M.answer_distribution(ANSWERS, VALID)
    assert d == pytest.approx({"California": 0.25, "Texas": 0.5, "New York": 0.25, "Ohio": 0.0})
    assert list(d) == VALID
    assert M.answer_distribution(["Paris"], VALID) == {k: 0.0 for k in VALID}


def test_kl_to_reference_hand_case_and_direction():
    ref = {"California": 0.4, "Texas": 0.4, "New York": 0.1, "Ohio": 0.1}
    # P = (.25, .5, .25, 0), Q = (.4, .4, .1, .1):
    # .25 ln(.25/.4) + .5 ln(.5/.4) + .25 ln(.25/.1) + 0
    # = .25 ln(.625 * 2.5) + .5 ln 1.25 = .25 ln 1.5625 + .5 ln 1.25 = .5 ln1.25 + .5 ln 1.25 = ln 1.25
    assert M.kl_to_reference(ANSWERS, ref, eps=0) == pytest.approx(math.log(1.25), abs=1e-12)
    # the reverse direction KL(Q||P) is infinite (Ohio never answered): we are not computing it
    assert M.kl([0.4, 0.4, 0.1, 0.1], [0.25, 0.5, 0.25, 0.0], eps=0) == math.inf
    # a collapsed model that always says Texas: 1 ln(1 / .4) = ln 2.5
    assert M.kl_to_reference(["Texas"] * 7, ref) == pytest.approx(math.log(2.5), abs=1e-8)
    # answers proportional to the reference: 0
    answers = ["California"] * 4 + ["Texas"] * 4 + ["New York", "Ohio"]
    assert M.kl_to_reference(answers, ref, eps=0) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(M.kl_to_reference(["Paris", "Berlin"], ref))


def test_kl_to_reference_smooths_zero_reference_entries():
    ref = {"A": 1.0, "B": 0.0}
    assert M.kl_to_reference(["A", "B"], ref, eps=0) == math.inf
    # eps = 0.1: q' = (1.1, .1)/1.2 = (11/12, 1/12); P = (.5, .5): .5 ln(36/11) as in kl
    assert M.kl_to_reference(["A", "B"], ref, eps=0.1) == pytest.approx(0.5 * math.log(36 / 11), abs=1e-12)


# --------------------------------------------------------------------------- shipped reference


def test_shipped_us_state_reference():
    ref = load_us_state_reference()
    assert len(ref) == 50
    assert sum(ref.values()) == pytest.approx(1.0, abs=1e-9)
    assert all(v > 0 for v in ref.values())
    assert {"California", "Texas", "New York", "Wyoming", "North Dakota"} <= ref.keys()
    assert next(iter(ref)) == "New York"  # the file's order: most frequent first
    # identical to the shared data file it was copied from
    shared = ROOT.parent / "shared" / "data" / "us_state_reference.json"
    if shared.exists():
        assert ref == json.loads(shared.read_text(encoding="utf-8"))
    # attribution ships next to it
    md = (ROOT / "assets" / "us_state_reference.md").read_text(encoding="utf-8")
    assert "RedPajama" in md and "Apache" in md and "0.1.3" in md
    # a model that only ever says California: ln(1 / P_ref(California))
    assert M.kl_to_reference(["California"] * 3, ref) == pytest.approx(
        math.log(1 / ref["California"]), abs=1e-6
    )
    # every state named once: precision 1, coverage 1
    assert M.precision(list(ref), ref) == 1.0
    assert M.coverage_n(list(ref), ref) == 1.0


def test_kl_logits_is_the_kl_of_the_two_softmaxes():
    rng = np.random.default_rng(4)
    a = rng.normal(0.0, 3.0, 5000).astype(np.float32)
    b = a + rng.normal(0.0, 0.1, 5000).astype(np.float32)
    p, q = (np.exp(x.astype(np.float64) - x.max()) for x in (a, b))
    assert M.kl_logits(a, b) == pytest.approx(M.kl(p, q, eps=0), rel=1e-9)
    assert M.kl_logits(a, a) == 0.0 and M.kl_logits(a, a + 7.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        M.kl_logits(a, b[:10])
