"""The stages of the sampler chain, each a function from the candidate array to a new one.

Owns ``_Cands`` (llama.cpp's ``llama_token_data_array`` between stages) and one
``_stage_NAME`` per sampler, with llama.cpp's semantics (see the package docstring), plus the
grammar stage (``GRAMMAR_TAIL``, ``GrammarDeadEnd``). Private to ``app.core.sampling``: the
chain (``chain.apply_chain``) calls them in order. Any thread (pure numpy); no Qt.
"""

from __future__ import annotations

import numpy as np

from backends.base import GenerationError, SamplerSettings

from .numeric import _F32, _ExpCache, _argsort_desc, _expf, _logf, _logf_scalar, _seqsum, _top_desc


class _Cands:
    """The candidate array between stages, in llama.cpp's array order.

    ``ids`` None means the whole vocabulary in id order (position == id). ``lg`` holds the
    current float32 logits (may be the caller's array: never written). ``ecache`` optionally
    holds ``ref`` and ``e = exp(lg - ref)`` in float32 (numpy's fast exp; an ``_ExpCache``, or
    the ``_Raw`` pass that computes ``e`` on first use) so the statistics of a
    whole-vocabulary stage need no second exp; it is never used where llama.cpp's rounding
    decides the kept set."""

    __slots__ = ("ids", "lg", "sorted", "ecache")

    def __init__(self, ids, lg, is_sorted, ecache=None):
        self.ids = ids
        self.lg = lg
        self.sorted = is_sorted
        self.ecache = ecache

    def __len__(self) -> int:
        return self.lg.shape[0]

    def take(self, pos: np.ndarray, is_sorted: bool) -> "_Cands":
        ids = pos.astype(np.int64, copy=False) if self.ids is None else self.ids[pos]
        return _Cands(ids, self.lg[pos], is_sorted)

    def head(self, k: int) -> "_Cands":
        if self.ids is None:  # copy: lg may be the caller's array
            return _Cands(np.arange(k, dtype=np.int64), self.lg[:k].copy(), True)
        return _Cands(self.ids[:k], self.lg[:k], True)

    def sort(self) -> "_Cands":
        return self if self.sorted else self.take(_argsort_desc(self.lg), True)

    def exp_from_max(self) -> tuple[np.float32, np.ndarray]:
        """llama.cpp's softmax numerators: expf(logit - max) over the array."""
        mx = self.lg[0] if self.sorted else self.lg.max()
        return mx, _expf(self.lg - mx)


def _stage_penalties(c: _Cands, s: SamplerSettings, window: np.ndarray) -> _Cands:
    if c.ids is not None:  # after another stage (an order of the user's): the candidates by id
        return _penalties_on_subset(c, s, window)
    n = len(c)
    if window.shape[0]:
        uniq, counts = np.unique(window, return_counts=True)
        ok = (uniq >= 0) & (uniq < n)
        uniq, counts = uniq[ok], counts[ok]
        if uniq.shape[0]:
            lg = c.lg.copy()
            rp, fq, pr = _F32(s.repeat_penalty), _F32(s.frequency_penalty), _F32(s.presence_penalty)
            v = lg[uniq]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                v = np.where(v <= 0, v * rp, v / rp).astype(_F32)
                v = v - (counts.astype(_F32) * fq + _F32(1.0) * pr).astype(_F32)
            lg[uniq] = v
            # keep exp(lg - m0) of the untouched tokens instead of another exp over the vocab
            if c.ecache is not None:
                m0, e0 = c.ecache.ref, c.ecache.e
                if v.max() <= m0:
                    e = e0.copy()
                    e[uniq] = np.exp(v - m0)
                    return _Cands(None, lg, False, _ExpCache(m0, e))
            return _Cands(None, lg, False)
    return _Cands(None, c.lg, False, c.ecache)


def _penalties_on_subset(c: _Cands, s: SamplerSettings, window: np.ndarray) -> _Cands:
    assert c.ids is not None
    if not window.shape[0]:
        return c
    uniq, counts = np.unique(window, return_counts=True)
    j = np.searchsorted(uniq, c.ids)
    jc = np.minimum(j, uniq.shape[0] - 1)
    hit = uniq[jc] == c.ids
    if not hit.any():
        return c
    pos = np.flatnonzero(hit)
    lg = c.lg.copy()
    rp, fq, pr = _F32(s.repeat_penalty), _F32(s.frequency_penalty), _F32(s.presence_penalty)
    v = lg[pos]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = np.where(v <= 0, v * rp, v / rp).astype(_F32)
        v = v - (counts[jc[pos]].astype(_F32) * fq + _F32(1.0) * pr).astype(_F32)
    lg[pos] = v
    return _Cands(c.ids, lg, False)


#: The grammar stage checks the tokens that hold all but at most this much of the probability
#: mass entering it; see ``_stage_grammar``.
GRAMMAR_TAIL = 2e-3
#: ... and checks every token when the tail could be more than this share of the allowed mass.
GRAMMAR_REL_ERROR = 0.01
#: Past this many candidates the check is made over the whole vocabulary at once.
_GRAMMAR_MAX_CHECKED = 40000


def _stage_grammar(c: _Cands, grammar) -> _Cands:
    """Keep the tokens ``grammar`` allows next (``grammar.allowed(ids)``: llama.cpp's own grammar
    sampler on exactly those candidates), before any truncation, as llama.cpp's "grammar first"
    path does (masking commutes with the penalties and the temperature, not with top-k/top-p).

    Deliberate difference from llama.cpp, whose sampler checks every token of the vocabulary
    (about 60 ms a step for 262,144 tokens here): only the tokens within 10 or 15 nats of the
    best are checked, enough to hold all but ``GRAMMAR_TAIL`` of the mass (a few thousand to
    some 25,000 tokens for a small model's flat tail: 1 to 4 ms); the rest is dropped. When that
    unchecked tail could be more than ``GRAMMAR_REL_ERROR`` of the allowed mass (the model wants
    what the grammar forbids, e.g. prose where the JSON must start), every token is checked, as
    llama.cpp does. So the kept set is llama.cpp's over the checked candidates, and the
    constrained distribution is within 1% of llama.cpp's at every step."""
    lg = c.lg
    n = lg.shape[0]
    if c.ecache is not None:
        m, e = c.ecache.ref, c.ecache.e
    else:
        m = lg.max()
        with np.errstate(under="ignore"):
            e = np.exp(lg - m)
    total = float(e.sum(dtype=np.float64))
    cand = None
    tail = 1.0
    for delta in (10.0, 15.0):
        mask = lg >= _F32(m - delta)
        cnt = int(np.count_nonzero(mask))
        if cnt > _GRAMMAR_MAX_CHECKED:
            break
        tail = max(0.0, 1.0 - float(e[mask].sum(dtype=np.float64)) / total)
        if tail <= GRAMMAR_TAIL or delta == 15.0:
            cand = np.flatnonzero(mask)
            break
    if cand is not None and tail <= GRAMMAR_TAIL:
        ok = grammar.allowed(cand)
        kept = cand[ok]
        allowed_mass = float(e[kept].sum(dtype=np.float64)) / total if kept.shape[0] else 0.0
        if allowed_mass * GRAMMAR_REL_ERROR < tail or kept.shape[0] == 0:
            cand = None
    else:
        cand = None
    if cand is None:
        cand = np.arange(n, dtype=np.int64)
        kept = cand[grammar.allowed(cand)]
    if kept.shape[0] == 0:
        raise GrammarDeadEnd("The grammar allows no token here: the constrained answer cannot go on.")
    kept = kept.astype(np.int64, copy=False)
    return _Cands(kept, lg[kept], False)


class GrammarDeadEnd(GenerationError):
    """No token is allowed by the grammar at this step."""


def _stage_top_k(c: _Cands, k: int, known_top: np.ndarray | None) -> _Cands:
    k = min(k, len(c))
    if c.sorted:
        return c.head(k)
    if known_top is not None and known_top.shape[0] >= k:
        return c.take(known_top[:k], True)
    return c.take(_top_desc(c.lg, k), True)


def _stage_typical(c: _Cands, p: np.float32, min_keep: int) -> _Cands:
    c = c.sort()
    lg = c.lg
    e = _expf(lg - lg[0])
    pr = e / _seqsum(e)
    logp = _logf(pr)
    with np.errstate(invalid="ignore"):
        terms = np.where(pr > 0, (-pr) * logp, _F32(0.0)).astype(_F32)
    ent = _seqsum(terms)
    shifted = np.abs(-logp - ent)
    order = np.argsort(shifted, kind="stable")
    cum = np.cumsum(pr[order], dtype=_F32)
    ok = cum > p
    if min_keep > 1:
        ok[: min_keep - 1] = False
    hit = np.flatnonzero(ok)
    last = int(hit[0]) + 1 if hit.shape[0] else len(c)
    return c.take(order[:last], False)


def _stage_top_p(c: _Cands, p: np.float32, min_keep: int) -> _Cands:
    n = len(c)
    mx, e = c.exp_from_max()
    S = _seqsum(e)  # llama.cpp sums in array order, in float32
    if c.sorted or n <= 1024:
        c2 = c
        if not c.sorted:
            order = _argsort_desc(c.lg)
            c2, e = c.take(order, True), e[order]
        cum = np.cumsum(e / S, dtype=_F32)
        ok = cum >= p
        if min_keep > 1:
            ok[: min_keep - 1] = False
        hit = np.flatnonzero(ok)
        last = int(hit[0]) + 1 if hit.shape[0] else n
        return c2.head(last)
    # large unsorted: grow a partial sort until the cumulative mass reaches p
    k = max(64, min_keep)
    while True:
        k = min(k, n)
        idx = _top_desc(c.lg, k)
        cum = np.cumsum(e[idx] / S, dtype=_F32)
        ok = cum >= p
        if min_keep > 1:
            ok[: min_keep - 1] = False
        hit = np.flatnonzero(ok)
        if hit.shape[0]:
            return c.take(idx[: int(hit[0]) + 1], True)
        if k >= n:
            return c.take(idx, True)
        k *= 16


def _stage_min_p(c: _Cands, p: np.float32, min_keep: int) -> _Cands:
    logp = _logf_scalar(p)
    n = len(c)
    if not c.sorted:
        thr = _F32(c.lg.max() + logp)
        mask = c.lg >= thr
        cnt = int(np.count_nonzero(mask))
        if cnt > 0 and cnt >= min_keep:
            if cnt == n:
                return c
            return c.take(np.flatnonzero(mask), False)
        c = c.sort()
    thr = _F32(c.lg[0] + logp)
    cnt = int(np.count_nonzero(c.lg >= thr))
    keep = min(n, max(cnt, min_keep, 1))
    return c if keep == n else c.head(keep)


def _stage_temperature(c: _Cands, t: np.float32) -> _Cands:
    if t <= 0:
        i = int(np.argmax(c.lg))
        return c.take(np.array([i], dtype=np.int64), True)
    ids = c.ids
    with np.errstate(over="ignore"):
        lg = (c.lg / t).astype(_F32, copy=False)
    return _Cands(ids, lg, c.sorted)


def _stage_logit_bias(c: _Cands, ids: np.ndarray, bias: np.ndarray) -> _Cands:
    """llama.cpp's logit-bias sampler: each (token, bias) pair adds its bias to that token's
    logit (pairs for the same token add up, in order); a token biased to -inf is removed (llama.cpp
    leaves it at -inf, which no later stage keeps). Runs first, on the whole vocabulary."""
    n = len(c)
    ok = (ids >= 0) & (ids < n)
    ids, bias = ids[ok], bias[ok]
    if ids.shape[0] == 0:
        return c
    lg = c.lg.copy()
    with np.errstate(invalid="ignore", over="ignore"):
        np.add.at(lg, ids, bias)
    banned = ~np.isfinite(lg[ids]) & (lg[ids] < 0)
    if banned.any():
        keep = np.ones(n, dtype=bool)
        keep[ids[banned]] = False
        if not keep.any():
            raise GenerationError("The logit bias bans every token: nothing is left to sample.")
        pos = np.flatnonzero(keep)
        return _Cands(pos.astype(np.int64), lg[pos], False)
    if c.ecache is not None:  # keep exp(lg - m0) of the untouched tokens
        m0, e0 = c.ecache.ref, c.ecache.e
        v = lg[ids]
        if v.max() <= m0:
            e = e0.copy()
            e[ids] = np.exp(v - m0)
            return _Cands(None, lg, False, _ExpCache(m0, e))
    return _Cands(None, lg, False)


def _stage_top_n_sigma(c: _Cands, n_sigma: np.float32) -> _Cands:
    """llama.cpp's top-n-sigma: keep the tokens whose logit is at least max - n * sigma, with
    the mean and the standard deviation of the candidates' finite logits, summed in float32 in
    array order as llama.cpp's loops do. llama.cpp sets the others to -inf; we remove them (the
    same distribution; "kept" counts the tokens left).

    Deliberate difference: llama.cpp's cut tokens stay in its array at -inf, so a later stage's
    ``min_keep`` counts them and a typical-p after top-n-sigma computes a NaN entropy there
    (0 * log 0); here a later stage sees only the tokens that can still be drawn. The same
    holds for a token the logit bias bans."""
    if len(c) <= 1:
        return c
    lg = c.lg
    fin = lg != _F32(-np.inf)
    v = lg if fin.all() else lg[fin]
    if v.shape[0] == 0:
        return c
    mx = v.max()
    count = _F32(v.shape[0])
    mean = _F32(_seqsum(v) / count)
    d = (v - mean).astype(np.float64)
    acc = _seqsum((d * d).astype(_F32))
    std = _F32(np.sqrt(np.float64(_F32(acc / count))))
    thr = _F32(mx - _F32(n_sigma * std))
    keep = lg >= thr
    cnt = int(np.count_nonzero(keep))
    if cnt == len(c):
        return c
    return c.take(np.flatnonzero(keep), c.sorted)


def _stage_xtc(c: _Cands, threshold: np.float32, min_keep: int) -> _Cands:
    """llama.cpp's XTC ("exclude top choices"), when its draw says it acts this step: of the
    tokens with probability >= ``threshold`` (the top of the distribution), all but the least
    likely one are removed, unless that would leave fewer than ``min_keep`` tokens or only one
    token reaches the threshold. Probabilities are llama.cpp's float32 softmax; its sum runs in
    sorted order, ours in array order (a last-bit difference that can move a token only when
    its probability equals the threshold to 7 digits)."""
    n = len(c)
    if n < 2:
        return c
    mx, e = c.exp_from_max()
    p = e / _seqsum(e)
    cnt = int(np.count_nonzero(p >= threshold))
    pos_last = cnt - 1 if cnt > 0 else 0
    if not (n - pos_last >= min_keep and pos_last > 0):
        return c
    if c.sorted:
        return _Cands(c.ids[pos_last:] if c.ids is not None else np.arange(pos_last, n, dtype=np.int64),
                      c.lg[pos_last:].copy() if c.ids is None else c.lg[pos_last:], True)
    top = _top_desc(c.lg, pos_last)
    keep = np.ones(n, dtype=bool)
    keep[top] = False
    return c.take(np.flatnonzero(keep), False)


def _stage_dynamic_temperature(c: _Cands, t: np.float32, delta: np.float32, exponent: np.float32
                                ) -> tuple[_Cands, np.float32]:
    """llama.cpp's temp-ext: the temperature for this step, from the normalised entropy of the
    candidates' distribution, min_temp + (max_temp - min_temp) * (H / log n) ** exponent with
    min_temp = max(0, t - delta) and max_temp = t + delta, then that temperature applied.
    As in llama.cpp the candidates are sorted first and the softmax and entropy are float32
    sums in that order (on 262,144 tokens the summation order moves the temperature in the 5th
    digit); the candidates leave sorted, as llama.cpp's do. Returns (candidates, temperature)."""
    n = len(c)
    c = c.sort()
    min_t = _F32(max(_F32(0.0), _F32(t - delta)))
    max_t = _F32(t + delta)
    max_entropy = _F32(-_logf_scalar(_F32(1.0) / _F32(n)))
    e = _expf(c.lg - c.lg[0])
    p = e / _seqsum(e)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * _logf(p), _F32(0.0)).astype(_F32)
    entropy = _F32(-_seqsum(terms))
    norm = _F32(entropy / max_entropy)
    t_used = _F32(min_t + _F32((max_t - min_t) * _F32(np.power(np.float64(norm), np.float64(exponent)))))
    return _stage_temperature(c, t_used), t_used
