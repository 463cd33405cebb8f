"""Statistics of the sampled-vs-ideal shift lab: S = A + alpha_hat (I - A).

Owns the numbers of RESEARCH.md section 3, each defined in its docstring:

- per concept: ``alpha`` = (A - S) * sign(A - I) and ``alpha_hat`` = alpha / |A - I|, and
  ``concept_result`` which bundles A (average), I (ideal), S (sample) of one concept into a frozen
  ``ConceptResult`` that says whether the concept is kept and, if not, why ("A equals I",
  "average could not be parsed: ...", ...);
- across a concept set: ``summarise`` -> ``ShiftSummary`` (fraction with alpha_hat > 0, exact
  binomial p-values against 0.5, correlation and least-squares line of S - A on I - A, mean and
  median alpha_hat);
- helpers: ``binomial_p`` (exact, in log space, n up to 1e5 and beyond), ``pearson_r``,
  ``fit_line`` and ``distribution_mean`` (the mean of a discrete distribution, used when S is
  computed exactly from the token tree instead of sampled).

Sign convention, checked on the poster examples: phone wait A=11.3, I=3.1, S=3.4 gives
alpha = 7.9, alpha_hat = 7.9 / 8.2 = 0.963 (> 0: the sample moved from the average toward the
ideal); 0 < alpha_hat < 1 lies between A and I, alpha_hat > 1 beyond I, alpha_hat < 0 away from I.

Pure numpy + stdlib, no Qt; every function is pure, so any thread.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np

__all__ = ["alpha", "alpha_hat", "ConceptResult", "concept_result", "binomial_p", "pearson_r", "fit_line",
           "ShiftSummary", "summarise", "DistributionMean", "distribution_mean", "A_EQUALS_I"]

#: ``ConceptResult.reason`` of a concept whose average equals its ideal.
A_EQUALS_I = "A equals I"
ALTERNATIVES = ("greater", "less", "two-sided")
# relative tolerance for "no more likely than the observed outcome" in the two-sided test (scipy's)
_TWO_SIDED_RTOL = 1e-7


def _sign(x: float) -> float:
    return (x > 0) - (x < 0)


def alpha(A: float, I: float, S: float) -> float:  # noqa: E741 - the paper's names
    """alpha = (A - S) * sign(A - I): how far the sample S moved from the average A toward the ideal I,
    in the units of the concept (0 when A == I)."""
    return (A - S) * _sign(A - I) + 0.0


def alpha_hat(A: float, I: float, S: float) -> float:  # noqa: E741
    """alpha_hat = alpha / |A - I|: the shift as a fraction of the distance from A to I.

    0 at the average, 1 at the ideal; ``nan`` when A == I (undefined).
    """
    d = abs(A - I)
    if d == 0:
        return math.nan
    return alpha(A, I, S) / d


# --------------------------------------------------------------------------- one concept


@dataclass(frozen=True)
class ConceptResult:
    """A, I, S of one concept and its alpha values.

    ``A``, ``I``, ``S`` are floats or None (not parsed). ``alpha`` is set when all three are
    known (it is 0.0 when A equals I); ``alpha_hat`` only when the concept is ``kept``. ``reason``
    says why a concept is dropped (None when kept): "A equals I", or one or more of
    "average could not be parsed: <why>", "ideal ...", "sample ..." joined by "; ".
    """

    concept_id: str
    name: str
    domain: str
    A: float | None
    I: float | None  # noqa: E741
    S: float | None
    alpha: float | None
    alpha_hat: float | None
    kept: bool
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _json_number(getattr(self, f.name)) for f in fields(self)}


def _usable(x) -> bool:
    return x is not None and isinstance(x, (int, float, np.integer, np.floating)) and math.isfinite(x)


def concept_result(concept_id: str, name: str, domain: str, A: float | None, I: float | None,  # noqa: E741
                   S: float | None, *, a_error: str | None = None, i_error: str | None = None,
                   s_error: str | None = None, tolerance: float = 1e-9) -> ConceptResult:
    """Bundle the three answers of one concept and decide whether it is kept.

    A value counts as not parsed when it is None or not finite (``*_error`` is the parser's reason,
    shown after "could not be parsed: "; without one the reason is "no value"). A concept whose
    values are all known is dropped as "A equals I" when |A - I| <= tolerance * max(1, |A|, |I|).
    """
    problems = []
    for label, value, err in (("average", A, a_error), ("ideal", I, i_error), ("sample", S, s_error)):
        if not _usable(value):
            why = err or ("no value" if value is None else f"not a finite number ({value!r})")
            problems.append(f"{label} could not be parsed: {why}")
    if problems:
        ka, ki, ks = (float(v) if _usable(v) else None for v in (A, I, S))  # type: ignore[arg-type]
        return ConceptResult(concept_id, name, domain, ka, ki, ks, None, None, False, "; ".join(problems))
    a, i, s = float(A), float(I), float(S)  # type: ignore[arg-type]  # all usable: checked above
    al = alpha(a, i, s)
    if abs(a - i) <= tolerance * max(1.0, abs(a), abs(i)):
        return ConceptResult(concept_id, name, domain, a, i, s, al, None, False, A_EQUALS_I)
    return ConceptResult(concept_id, name, domain, a, i, s, al, al / abs(a - i), True, None)


# --------------------------------------------------------------------------- binomial test


def _binom_logpmf(n: int, p: float) -> np.ndarray:
    """log P(X = k) for k = 0..n, X ~ Binomial(n, p) (-inf where the probability is 0)."""
    k = np.arange(n + 1, dtype=np.float64)
    if p == 0.0 or p == 1.0:
        out = np.full(n + 1, -np.inf)
        out[0 if p == 0.0 else n] = 0.0
        return out
    lgam = np.array([math.lgamma(j + 1.0) for j in range(n + 1)])
    return lgam[n] - lgam - lgam[::-1] + k * math.log(p) + (n - k) * math.log1p(-p)


def _logsumexp(a: np.ndarray) -> float:
    if a.size == 0:
        return -math.inf
    m = float(np.max(a))
    if m == -math.inf:
        return -math.inf
    return m + math.log(float(np.sum(np.exp(a - m))))


def binomial_p(k: int, n: int, p: float = 0.5, alternative: str = "greater") -> float:
    """Exact binomial test p-value for k successes in n trials with success probability p.

    "greater": P(X >= k); "less": P(X <= k); "two-sided": the total probability of the outcomes
    that are no more likely than the observed one (P(X = j) <= P(X = k) * (1 + 1e-7), the relative
    tolerance scipy.stats.binomtest uses), which is 2 * one-sided for p = 0.5. Sums are taken in
    log space, so large n (1e5 and more) neither under- nor overflows. The result is clipped to
    [0, 1]. ValueError for k outside 0..n, negative n, p outside [0, 1] or an unknown alternative.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"unknown alternative {alternative!r}; expected one of {', '.join(ALTERNATIVES)}")
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise ValueError("k and n must be whole numbers")
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"p must be in [0, 1], got {p}")
    if (alternative == "greater" and k == 0) or (alternative == "less" and k == n):
        return 1.0   # the whole distribution, exactly
    logpmf = _binom_logpmf(n, float(p))
    if alternative == "greater":
        lp = _logsumexp(logpmf[k:])
    elif alternative == "less":
        lp = _logsumexp(logpmf[: k + 1])
    else:
        threshold = logpmf[k] + math.log1p(_TWO_SIDED_RTOL)
        lp = _logsumexp(logpmf[logpmf <= threshold])
    return min(1.0, max(0.0, math.exp(lp)))


# --------------------------------------------------------------------------- correlation and line


def _xy(x, y) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"x and y differ in length: {a.size} and {b.size}")
    return a, b


def pearson_r(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Pearson correlation of x and y; ``nan`` for fewer than 2 points or zero variance in either."""
    a, b = _xy(x, y)
    if a.size < 2:
        return math.nan
    da, db = a - a.mean(), b - b.mean()
    sa, sb = math.sqrt(float(da @ da)), math.sqrt(float(db @ db))
    if sa == 0 or sb == 0 or not (math.isfinite(sa) and math.isfinite(sb)):
        return math.nan
    return max(-1.0, min(1.0, float(da @ db) / (sa * sb)))


def fit_line(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Least-squares line y = slope * x + intercept; ``(nan, nan)`` for < 2 points or constant x."""
    a, b = _xy(x, y)
    if a.size < 2:
        return math.nan, math.nan
    da = a - a.mean()
    sxx = float(da @ da)
    if sxx == 0:
        return math.nan, math.nan
    slope = float(da @ (b - b.mean())) / sxx
    return slope, float(b.mean() - slope * a.mean())


# --------------------------------------------------------------------------- a concept set


def _json_number(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass(frozen=True)
class ShiftSummary:
    """The lab's result over a concept set.

    ``n_total`` concepts, ``n_used`` kept, ``n_dropped`` not (``dropped``: (concept_id, reason)
    pairs in input order). Over the kept ones: ``n_positive`` with alpha_hat > 0 (alpha_hat == 0
    counts as not positive), ``fraction`` = n_positive / n_used, ``p_one_sided`` = P(X >= n_positive)
    and ``p_two_sided`` for X ~ Binomial(n_used, 0.5), ``r`` = Pearson correlation of S - A with
    I - A, ``slope`` / ``intercept`` the least-squares line S - A = slope * (I - A) + intercept,
    ``mean_alpha_hat`` and ``median_alpha_hat``. Undefined numbers are ``nan`` (``to_dict`` turns
    them into None).
    """

    n_total: int
    n_used: int
    n_dropped: int
    dropped: tuple[tuple[str, str], ...]
    n_positive: int
    fraction: float
    p_one_sided: float
    p_two_sided: float
    r: float
    slope: float
    intercept: float
    mean_alpha_hat: float
    median_alpha_hat: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: NaN and infinities become None, ``dropped`` a list of {concept_id, reason}."""
        d = {f.name: _json_number(getattr(self, f.name)) for f in fields(self)}
        d["dropped"] = [{"concept_id": cid, "reason": why} for cid, why in self.dropped]
        return d


def summarise(results: Iterable[ConceptResult]) -> ShiftSummary:
    """Summarise concept results (see ``ShiftSummary`` for every field)."""
    results = list(results)
    kept = [r for r in results if r.kept]
    dropped = tuple((r.concept_id, r.reason or "") for r in results if not r.kept)
    n_used = len(kept)
    ah = np.array([r.alpha_hat for r in kept], dtype=np.float64)
    n_pos = int(np.sum(ah > 0))
    known = [(r.A, r.I, r.S) for r in kept if r.A is not None and r.I is not None and r.S is not None]  # every kept one
    x = np.array([i - a for a, i, _s in known], dtype=np.float64)
    y = np.array([s - a for a, _i, s in known], dtype=np.float64)
    slope, intercept = fit_line(x, y)
    return ShiftSummary(
        n_total=len(results),
        n_used=n_used,
        n_dropped=len(dropped),
        dropped=dropped,
        n_positive=n_pos,
        fraction=n_pos / n_used if n_used else math.nan,
        p_one_sided=binomial_p(n_pos, n_used, 0.5, "greater"),
        p_two_sided=binomial_p(n_pos, n_used, 0.5, "two-sided"),
        r=pearson_r(x, y),
        slope=slope,
        intercept=intercept,
        mean_alpha_hat=float(ah.mean()) if n_used else math.nan,
        median_alpha_hat=float(np.median(ah)) if n_used else math.nan,
    )


# --------------------------------------------------------------------------- exact distributions


class DistributionMean(NamedTuple):
    """``mean`` of a discrete distribution and the probability ``mass`` it was computed from."""

    mean: float
    mass: float


def distribution_mean(values: Sequence[float], probs: Sequence[float]) -> DistributionMean:
    """Mean of the discrete distribution putting weight ``probs[i]`` on ``values[i]``.

    The weights need not sum to 1 (e.g. the probabilities of the numeric answers found in a token
    tree, which cover only part of the mass): mean = sum(p_i v_i) / sum(p_i), and ``mass`` =
    sum(p_i) is returned alongside so the caller can say how much of the distribution the mean
    covers. Repeated values are fine (their weights add up). Empty input or zero mass gives
    (nan, 0.0). ValueError for mismatched lengths, negative or non-finite weights, non-finite values.
    """
    v, p = _xy(values, probs)
    if not np.all(np.isfinite(v)):
        raise ValueError("values must be finite numbers")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("probabilities must be finite and non-negative")
    mass = float(p.sum())
    if mass == 0:
        return DistributionMean(math.nan, 0.0)
    return DistributionMean(float(p @ v) / mass, mass)
