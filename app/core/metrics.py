"""Diversity and distribution metrics for the Verbalized Sampling lab (and later labs).

Owns the numbers of issue 4, items 5 and 6, each defined exactly in its docstring:

- distributions on aligned arrays: ``entropy``, ``kl``, ``js``, ``total_variation``
  (natural logarithms, so nats); ``kl_logits`` for two logit vectors (llama.cpp's batch noise);
- diversity of a set of outputs for one prompt: ``semantic_diversity`` (from embeddings),
  ``rouge_l_f1`` / ``lexical_similarity`` (ROUGE-L on whitespace tokens), ``distinct_n``, and
  ``diversity_ratio`` (VS / Direct per metric);
- enumerable questions ("Name a US state"): ``normalise_answer``, ``precision``,
  ``coverage_n``, ``answer_distribution`` and ``kl_to_reference``.

It does not run models, compute embeddings or draw anything; callers pass texts, embeddings
and answers in. Conventions: a metric that is undefined for its input (fewer than two outputs,
no n-grams, no valid answers) returns ``nan`` rather than a made-up number; malformed input
(negative probabilities, mismatched shapes, zero vectors) raises ``ValueError``.

Pure numpy + stdlib: no Qt. Every function is pure and keeps no state, so it can run on any
thread (the comparison worker in the app, the CLI, tests).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "entropy",
    "kl",
    "js",
    "total_variation",
    "semantic_diversity",
    "rouge_l_f1",
    "lcs_length",
    "lexical_similarity",
    "distinct_n",
    "diversity_ratio",
    "normalise_answer",
    "precision",
    "coverage_n",
    "answer_distribution",
    "kl_to_reference",
]

#: Default additive smoothing of ``q`` in ``kl`` and of the reference in ``kl_to_reference``.
DEFAULT_EPS = 1e-10


# --------------------------------------------------------------------------- distributions


def _distribution(p, name: str = "p") -> np.ndarray:
    """``p`` as a float64 1-D array divided by its sum; ValueError if it is not a distribution."""
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} has non-finite entries")
    if np.any(a < 0):
        raise ValueError(f"{name} has negative entries")
    total = a.sum()
    if total <= 0:
        raise ValueError(f"{name} sums to zero")
    return a / total


def _pair(p, q) -> tuple[np.ndarray, np.ndarray]:
    a, b = _distribution(p, "p"), _distribution(q, "q")
    if a.shape != b.shape:
        raise ValueError(f"p and q are not aligned: shapes {a.shape} and {b.shape}")
    return a, b


def entropy(p) -> float:
    """Shannon entropy H(p) = -sum_i p_i ln p_i, in nats.

    ``p`` (non-negative, finite, 1-D) is first divided by its sum, so counts are accepted.
    Entries with p_i = 0 contribute 0 (the limit of x ln x). Raises ValueError for negative or
    non-finite entries or an all-zero array.
    """
    a = _distribution(p)
    nz = a[a > 0]
    return float(-(nz * np.log(nz)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def kl(p, q, eps: float = DEFAULT_EPS) -> float:
    """Kullback-Leibler divergence KL(p || q) = sum_i p_i ln(p_i / q_i), in nats.

    ``p`` and ``q`` are aligned 1-D arrays (entry i of both is the same outcome), each divided
    by its sum first. Zeros: terms with p_i = 0 contribute 0 whatever q_i is. Zeros in ``q`` are
    handled by additive smoothing of ``q`` only: q'_i = (q_i + eps) / sum_j (q_j + eps), and the
    sum uses q'. With ``eps = 0`` no smoothing is done and the result is ``inf`` when some
    p_i > 0 has q_i = 0. ``p`` is never smoothed. Asymmetric: kl(p, q) != kl(q, p) in general;
    kl(p, p) = 0 when eps = 0 (and ~0 for the default tiny eps).
    """
    if eps < 0 or not math.isfinite(eps):
        raise ValueError("eps must be a finite number >= 0")
    a, b = _pair(p, q)
    if eps > 0:
        b = (b + eps) / (b + eps).sum()
    mask = a > 0
    if np.any(b[mask] == 0):
        return math.inf
    return max(float((a[mask] * np.log(a[mask] / b[mask])).sum()), 0.0)



def kl_logits(a, b) -> float:
    """KL(softmax(a) || softmax(b)) in nats, computed in float64 from two aligned logit vectors
    (e.g. one position's logits evaluated in two batch shapes). Finite logits only."""
    def logp(x):
        y = np.asarray(x, dtype=np.float64)
        y = y - y.max()
        return y - np.log(np.exp(y).sum())

    la, lb = logp(a), logp(b)
    if la.shape != lb.shape or la.ndim != 1:
        raise ValueError("kl_logits needs two 1-D logit vectors of the same length")
    return float((np.exp(la) * (la - lb)).sum())


def js(p, q) -> float:
    """Jensen-Shannon divergence JS(p, q) = KL(p || m)/2 + KL(q || m)/2 with m = (p + q)/2, nats.

    ``p`` and ``q`` are aligned and each divided by its sum first. No smoothing is needed (m > 0
    wherever p or q is). Symmetric, 0 iff p = q, at most ln 2 (reached for disjoint supports).
    """
    a, b = _pair(p, q)
    m = (a + b) / 2
    return min(max(kl(a, m, eps=0.0) / 2 + kl(b, m, eps=0.0) / 2, 0.0), math.log(2))


def total_variation(p, q) -> float:
    """Total variation distance TV(p, q) = (1/2) sum_i |p_i - q_i|, in [0, 1].

    ``p`` and ``q`` are aligned and each divided by its sum first. Symmetric; 1 for disjoint
    supports.
    """
    a, b = _pair(p, q)
    return float(np.abs(a - b).sum() / 2)


# --------------------------------------------------------------------------- diversity


def semantic_diversity(embeddings: np.ndarray) -> float:
    """Semantic diversity = 100 x (1 - mean pairwise cosine similarity), as in the VS paper.

    ``embeddings`` is an (N, d) array, one row per output. For every unordered pair i < j the
    cosine similarity cos_ij = e_i . e_j / (|e_i| |e_j|) is clipped to [0, 1] (so negatively
    correlated outputs count as unrelated, not as "more than unrelated"), and the result is
    100 x (1 - mean over the N(N-1)/2 pairs). Range [0, 100]; identical rows give 0.

    Rule for small inputs: fewer than 2 rows -> ``nan`` (no pairs, diversity undefined).
    Raises ValueError for a non-2-D array, non-finite entries or a zero row (cosine undefined).
    """
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (N, d) array, got shape {e.shape}")
    if e.shape[0] < 2:
        return math.nan
    if not np.all(np.isfinite(e)):
        raise ValueError("embeddings have non-finite entries")
    norms = np.linalg.norm(e, axis=1)
    if np.any(norms == 0):
        raise ValueError("an embedding row is all zeros: its cosine similarity is undefined")
    u = e / norms[:, None]
    sims = np.clip(u @ u.T, 0.0, 1.0)
    iu = np.triu_indices(e.shape[0], k=1)
    return float(100.0 * (1.0 - sims[iu].mean()))


def _match_masks(tokens: Sequence[str]) -> dict[str, int]:
    masks: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    return masks


def _lcs_from_masks(masks: Mapping[str, int], b_tokens: Sequence[str]) -> int:
    # Bit-parallel LCS (Allison & Dix 1986): bit i of s marks a "break" of the LCS row at
    # position i of a; popcount(s) is the LCS length after each token of b.
    s = 0
    for tok in b_tokens:
        m = masks.get(tok)
        if m is None:
            continue
        x = m | s
        s = x & ((x - ((s << 1) | 1)) ^ x)
    return s.bit_count()


def lcs_length(a_tokens: Sequence[str], b_tokens: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (exact match of tokens)."""
    return _lcs_from_masks(_match_masks(a_tokens), b_tokens)


def _f1_from_lcs(lcs: int, m: int, n: int) -> float:
    if m == 0 or n == 0 or lcs == 0:
        return 0.0
    prec, rec = lcs / n, lcs / m
    return 2 * prec * rec / (prec + rec)


def rouge_l_f1(a_tokens: Sequence[str], b_tokens: Sequence[str]) -> float:
    """ROUGE-L F1 between two token sequences, in [0, 1].

    With L = LCS(a, b), m = len(a), n = len(b): recall R = L / m, precision P = L / n,
    F1 = 2PR / (P + R) (= 2L / (m + n)); symmetric in a and b. Tokens are compared exactly: no
    lowercasing, no stemming (split texts with ``str.split()`` for the paper's whitespace
    tokens). If either sequence is empty, F1 = 0 (the ``rouge-score`` package's convention).
    """
    a, b = list(a_tokens), list(b_tokens)
    return _f1_from_lcs(lcs_length(a, b), len(a), len(b))


def lexical_similarity(texts: Sequence[str]) -> float:
    """Mean pairwise ROUGE-L F1 x 100 over all unordered pairs of ``texts`` (lower = more diverse).

    Each text is split on whitespace (``str.split()``); for N texts the mean is over the
    N(N-1)/2 pairs i < j of ``rouge_l_f1``. Identical non-empty texts give 100. Fewer than two
    texts -> ``nan``. Cost: one bit-parallel LCS per pair (fast for N = 150 outputs).
    """
    toks = [str(t).split() for t in texts]
    if len(toks) < 2:
        return math.nan
    masks = [_match_masks(t) for t in toks]
    total, pairs = 0.0, 0
    for i in range(len(toks)):
        for j in range(i + 1, len(toks)):
            lcs = _lcs_from_masks(masks[i], toks[j])
            total += _f1_from_lcs(lcs, len(toks[i]), len(toks[j]))
            pairs += 1
    return 100.0 * total / pairs


def distinct_n(texts: Iterable[str], n: int) -> float:
    """distinct-n = (number of distinct n-grams) / (total number of n-grams), pooled over texts.

    Each text is split on whitespace; its n-grams are the len - n + 1 contiguous token tuples
    (none if it has fewer than n tokens; n-grams never cross text boundaries). Distinctness is
    counted over all texts together. Range (0, 1]; ``nan`` when there are no n-grams at all.
    Raises ValueError for n < 1.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    counts: Counter[tuple[str, ...]] = Counter()
    for text in texts:
        t = str(text).split()
        counts.update(tuple(t[i : i + n]) for i in range(len(t) - n + 1))
    total = sum(counts.values())
    return len(counts) / total if total else math.nan


def diversity_ratio(vs: Mapping[str, float], direct: Mapping[str, float]) -> dict[str, float]:
    """VS / Direct for every metric present in both mappings (keys in ``vs`` order).

    ratio[k] = vs[k] / direct[k]; ``nan`` when direct[k] is 0 or either value is nan. Metrics
    where lower means more diverse (``lexical_similarity``) keep the same VS / Direct
    definition: there a ratio below 1 means VS is more diverse.
    """
    out: dict[str, float] = {}
    for key, v in vs.items():
        if key not in direct:
            continue
        d = float(direct[key])
        v = float(v)
        out[key] = math.nan if d == 0 or math.isnan(d) or math.isnan(v) else v / d
    return out


# --------------------------------------------------------------------------- enumerable questions

_DASHES = re.compile(r"[\u2010-\u2015\-/_]")
_WS = re.compile(r"\s+")


def normalise_answer(text: str) -> str:
    """Canonical form of a short answer, for matching against a list of valid answers.

    Steps: Unicode NFKC; case folding; dashes, slashes and underscores become spaces; every
    other punctuation character (Unicode category P*) is removed ("D.C." -> "dc", "Hawai'i" ->
    "hawaii"); whitespace runs collapse to one space and the ends are stripped; finally one
    leading article "the " is dropped ("The Carolinas" -> "carolinas"). Idempotent.
    """
    s = unicodedata.normalize("NFKC", str(text)).casefold()
    s = _DASHES.sub(" ", s)
    s = "".join(ch for ch in s if not unicodedata.category(ch).startswith("P"))
    s = _WS.sub(" ", s).strip()
    if s.startswith("the "):
        s = s[4:].lstrip()
    return s


def _valid_map(valid: Iterable[str]) -> dict[str, str]:
    """normalised form -> first original spelling of each valid answer."""
    out: dict[str, str] = {}
    for v in valid:
        out.setdefault(normalise_answer(v), v)
    return out


def precision(answers: Sequence[str], valid: Iterable[str]) -> float:
    """Share of ``answers`` that are valid: #{a : normalise(a) in normalise(valid)} / len(answers).

    Counts every answer (repeats included). ``nan`` for no answers.
    """
    vm = _valid_map(valid)
    if not answers:
        return math.nan
    return sum(normalise_answer(a) in vm for a in answers) / len(answers)


def coverage_n(answers: Iterable[str], valid: Iterable[str]) -> float:
    """Coverage-N = (distinct valid answers hit) / (number of distinct valid answers).

    Matching uses ``normalise_answer`` on both sides; valid answers that normalise alike count
    once. ``nan`` if ``valid`` is empty.
    """
    vm = _valid_map(valid)
    if not vm:
        return math.nan
    hit = {normalise_answer(a) for a in answers} & vm.keys()
    return len(hit) / len(vm)


def answer_distribution(answers: Iterable[str], valid: Iterable[str]) -> dict[str, float]:
    """Relative frequency of each valid answer among the valid answers given.

    Answers are matched with ``normalise_answer``; invalid answers are dropped (``precision``
    measures them). Keys are the valid answers' own spelling, every valid answer present (0.0
    when never given), in the order of ``valid``; values sum to 1. With no valid answer at all
    every value is 0.0.
    """
    vm = _valid_map(valid)
    counts = Counter(normalise_answer(a) for a in answers)
    total = sum(counts[k] for k in vm)
    return {orig: (counts[k] / total if total else 0.0) for k, orig in vm.items()}


def kl_to_reference(
    answers: Iterable[str], reference: Mapping[str, float], eps: float = DEFAULT_EPS
) -> float:
    """KL(P_answers || P_reference) over the reference's support, in nats.

    P_answers is ``answer_distribution(answers, reference.keys())``: the empirical frequencies
    of the valid answers (answers outside the reference are dropped; ``precision`` reports
    them). P_reference is the reference divided by its sum. Direction: the answers' distribution
    is the first argument, as in the VS paper's comparison of a model's answers with the
    pretraining-corpus frequencies, so states the model never names contribute 0 (no smoothing
    of the answers is needed) and a model collapsed onto one state s scores ln(1 / P_ref(s)).
    Smoothing: only the reference, additively, as in ``kl``: q' = (q + eps) / sum(q + eps),
    which only matters if the reference has zero entries. ``nan`` when no answer is valid.
    """
    keys = list(reference.keys())
    dist = answer_distribution(answers, keys)
    vm = _valid_map(keys)
    if not any(dist.values()):
        return math.nan
    # Reference entries that normalise alike are summed onto the first spelling.
    q: dict[str, float] = {}
    for k in keys:
        orig = vm[normalise_answer(k)]
        q[orig] = q.get(orig, 0.0) + float(reference[k])
    order = list(dist.keys())
    return kl([dist[k] for k in order], [q[k] for k in order], eps=eps)
