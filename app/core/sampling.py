"""Our own sampler chain, with llama.cpp's semantics, and the per-step analysis around it.

Owns: ``softmax_stats``, ``apply_chain`` and ``ChainResult`` (plus ``benchmark_chain``).
Given one step's full-vocabulary logits, ``apply_chain`` runs the chain in llama.cpp's
default order (``SAMPLER_ORDER``: penalties, top_k, typical, top_p, min_p, temperature),
records what every active stage did (``StageInfo``), and leaves a ``ChainResult`` that can
draw the next token and build the ``Step`` record.

Semantics follow llama.cpp's own samplers (``src/llama-sampler.cpp`` of the llama.cpp
vendored in llama-cpp-python 0.3.36) including the details that decide which tokens survive:
``min_keep``, ``>=`` in top-p versus ``>`` in typical, top-k ignoring ``min_keep``, softmax
renormalised over the current candidates, typical reordering the candidates, min-p's two
code paths, and the float32 arithmetic. Where a kept set depends on rounding (cumulative sums
in top-p and typical) we repeat llama.cpp's float32 sums in its own candidate order, so our
kept set is the one llama.cpp would keep. Reported probabilities, entropies and KL are
computed in float64 where it is cheap.

Deliberate differences: ties between equal logits are broken by candidate order (llama.cpp
leaves them to an unstable sort); a candidate whose probability underflows to 0 adds nothing
to typical's entropy (llama.cpp would get NaN there).

Pure numpy + stdlib: no Qt, no llama_cpp import. It runs on whatever thread calls it (the
generation worker in the app). The caller's logits may be a view into llama.cpp's memory: they
are only read, never written, and a ``ChainResult`` keeps no reference to them. A
``ChainResult`` is not meant to be shared across threads.

Over 500 lines on purpose: one sampler chain with llama.cpp's semantics; the stages share the
private candidate array and its cached exponentials, which must not leak out of this module.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np

from backends.base import SAMPLER_ORDER, GenerationError, SamplerSettings, StageInfo, Step, TokenAlt

__all__ = ["softmax_stats", "apply_chain", "ChainResult", "benchmark_chain", "GRAMMAR_TAIL", "GrammarDeadEnd"]

_F32 = np.float32
_EMPTY_IDS = np.zeros(0, dtype=np.int64)
# Above this many candidates the float64 work is done in float32 instead (speed).
_SMALL = 16384


# --------------------------------------------------------------------------------------
# numeric helpers
# --------------------------------------------------------------------------------------


def _expf(a: np.ndarray) -> np.ndarray:
    """float32 exp matching C's ``expf`` (glibc) on all but ~1 in 1000 inputs: computed in
    float64 and rounded. numpy's own float32 exp is off by an ulp on ~40% of inputs, which is
    enough to move a top-p boundary on a flat 262k vocabulary. ~0.4 ms per 262k values."""
    return np.exp(a, dtype=np.float64, out=np.empty(a.shape, _F32), casting="same_kind")


def _logf(a: np.ndarray) -> np.ndarray:
    """float32 log matching C's ``logf`` the same way (log(0) = -inf, no warning)."""
    with np.errstate(divide="ignore"):
        return np.log(a, dtype=np.float64, out=np.empty(a.shape, _F32), casting="same_kind")


def _logf_scalar(x: float | np.floating) -> np.float32:
    x32 = float(_F32(x))
    return _F32(math.log(x32)) if x32 > 0 else _F32(-np.inf)


def _seqsum(a: np.ndarray) -> np.float32:
    """The float32 sum a C loop ``for (...) s += a[i];`` gives (sequential, not pairwise)."""
    if a.shape[0] == 0:
        return _F32(0.0)
    return np.cumsum(a, dtype=_F32)[-1]


def _argsort_desc(v: np.ndarray) -> np.ndarray:
    """Indices sorting ``v`` by descending value; equal values keep their order."""
    n = v.shape[0]
    if n <= 4096:
        return np.argsort(-v, kind="stable")
    b = (v + _F32(0.0)).view(np.int32)  # + 0 turns -0.0 into +0.0 so they tie
    key = b ^ ((b >> 31) & 0x7FFFFFFF)  # integer order == float order
    comb = ((~key).astype(np.int64) << 32) | np.arange(n, dtype=np.int64)
    comb.sort()
    return comb & 0xFFFFFFFF


def _top_desc(v: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values of ``v``, descending; ties by position.

    Avoids a full sort and a full argpartition: a threshold taken from a strided sample picks a
    small superset of the top k (retrying with a lower threshold if it picked too few)."""
    n = v.shape[0]
    if k <= 0:
        return _EMPTY_IDS
    if k >= n or n <= 4096:
        return _argsort_desc(v)[:k]
    step = max(1, n // 2048)
    samp = v[::step]
    ns = samp.shape[0]
    r = 2 * (-(-k // step)) + 8
    while True:
        if r >= ns:
            part = np.argpartition(v, n - k)[n - k :]
            cand = np.flatnonzero(v >= v[part].min())
            break
        t = np.partition(samp, ns - r)[ns - r]
        cand = np.flatnonzero(v >= t)
        if cand.shape[0] >= k:
            break
        r *= 4
    order = _argsort_desc(v[cand])[:k]
    return cand[order]


def _sample_index(w: np.ndarray, u: float) -> int:
    """Index i with cumulative weight crossing ``u * total`` (inverse CDF), in two levels for
    long arrays so no full cumulative sum is needed."""
    n = w.shape[0]
    if n <= 8192:
        c = np.cumsum(w, dtype=np.float64)
        i = int(np.searchsorted(c, u * c[-1], side="right"))
        return min(i, n - 1)
    block = 1024
    nb = -(-n // block)
    padded = np.zeros(nb * block, dtype=w.dtype)
    padded[:n] = w
    sums = padded.reshape(nb, block).sum(axis=1, dtype=np.float64)
    c = np.cumsum(sums)
    target = u * c[-1]
    b = min(int(np.searchsorted(c, target, side="right")), nb - 1)
    while b > 0 and sums[b] <= 0:
        b -= 1
    rest = target - (c[b - 1] if b > 0 else 0.0)
    inner = np.cumsum(padded[b * block : (b + 1) * block], dtype=np.float64)
    j = min(int(np.searchsorted(inner, rest, side="right")), block - 1)
    while j > 0 and padded[b * block + j] <= 0:
        j -= 1
    return min(b * block + j, n - 1)


class _Raw:
    """One pass over the raw logits: max, shifted logits, their exp, log-sum-exp, entropy."""

    __slots__ = ("x", "m", "m32", "y", "e", "s", "lse", "entropy")

    def __init__(self, logits: np.ndarray) -> None:
        x = np.asarray(logits)
        if x.ndim != 1 or x.shape[0] == 0:
            raise ValueError("logits must be a non-empty 1-D array")
        if x.dtype != _F32:
            x = x.astype(_F32)
        m = x.max()
        with np.errstate(invalid="ignore"):
            y = np.subtract(x, m)  # new array: the caller's memory is only read
            e = np.exp(y)
            s = float(e.sum())
            d = float(np.einsum("i,i->", e, y))  # no BLAS: OpenBLAS threads would spin
        if not (math.isfinite(float(m)) and math.isfinite(d) and s > 0):
            x, m, y, e, s, d = self._careful(x)
        self.x: np.ndarray | None = x
        self.m32 = _F32(m)
        self.m = float(m)
        self.y = y
        self.e = e
        self.s = s
        self.lse = self.m + math.log(s)
        self.entropy = max(0.0, math.log(s) - d / s)

    @staticmethod
    def _careful(x: np.ndarray):
        x = np.where(np.isnan(x), _F32(-np.inf), x)
        x = np.minimum(x, np.finfo(_F32).max).astype(_F32)
        m = x.max()
        if not math.isfinite(float(m)):
            raise ValueError("logits are all -inf or NaN")
        y = np.subtract(x, m)
        e = np.exp(y)
        s = float(e.sum())
        d = float(np.einsum("i,i->", e, np.where(e > 0, y, _F32(0.0))))
        return x, m, y, e, s, d


def softmax_stats(logits: np.ndarray) -> tuple[float, float]:
    """(log-sum-exp, entropy in nats) of softmax(logits) over the whole vector.

    One max, one exp and two reductions in float32; the input is not modified."""
    r = _Raw(logits)
    return r.lse, r.entropy


# --------------------------------------------------------------------------------------
# candidates (llama.cpp's llama_token_data_array) and stages
# --------------------------------------------------------------------------------------


class _Cands:
    """The candidate array between stages, in llama.cpp's array order.

    ``ids`` None means the whole vocabulary in id order (position == id). ``lg`` holds the
    current float32 logits (may be the caller's array: never written). ``ecache`` optionally
    holds ``(ref, exp(lg - ref))`` in float32 (numpy's fast exp) so the statistics of a
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
                m0, e0 = c.ecache
                if v.max() <= m0:
                    e = e0.copy()
                    e[uniq] = np.exp(v - m0)
                    return _Cands(None, lg, False, (m0, e))
            return _Cands(None, lg, False)
    return _Cands(None, c.lg, False, c.ecache)


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
        m, e = c.ecache
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


# --------------------------------------------------------------------------------------
# snapshots: one distribution per stage, for lookups of arbitrary tokens
# --------------------------------------------------------------------------------------


class _Snap:
    """A distribution p_i = exp(lg_i - ref) / z over ``ids`` (None = the whole vocabulary).
    Holds only arrays this module owns."""

    __slots__ = ("ids", "lg", "ref", "z", "w", "shift", "_sorted_ids", "_sorted_pos", "_posmap")

    def __init__(self, ids, lg, ref: float, z: float, w: np.ndarray | None = None,
                 shift: float = 0.0):
        self.ids = ids
        self.lg = lg
        self.ref = ref
        self.z = z
        self.w = w  # cached exp(lg - ref), when already known
        self.shift = shift  # the logit is lg + shift (the raw snapshot stores x - max)
        self._sorted_ids: np.ndarray | None = None
        self._sorted_pos: np.ndarray | None = None
        self._posmap: np.ndarray | None = None

    @classmethod
    def of(cls, c: _Cands, raw: _Raw) -> "_Snap":
        n = len(c)
        if c.ids is None and c.lg is raw.x:
            return cls(None, raw.y, 0.0, raw.s, raw.e, raw.m)
        if c.ids is None and c.ecache is not None:
            m, e = c.ecache
            z = float(e.sum())
            if z > 1e-20:  # else the penalties pushed everything far below m: start afresh
                return cls(None, c.lg, float(m), z, e)
        ref = float(c.lg.max())
        if n <= _SMALL:
            z = float(np.exp(c.lg.astype(np.float64) - ref).sum())
        else:
            z = float(np.exp(c.lg - _F32(ref)).sum())
        return cls(c.ids, c.lg, ref, z)

    def __len__(self) -> int:
        return self.lg.shape[0]

    @property
    def xref(self) -> float:
        """``ref`` in logit units: p_i = exp(logit_i - xref) / z."""
        return self.ref + self.shift

    def positions(self, q: np.ndarray) -> np.ndarray:
        """Position of each queried id in this snapshot, -1 when absent."""
        q = np.asarray(q, dtype=np.int64)
        if self.ids is None:
            n = self.lg.shape[0]
            return np.where((q >= 0) & (q < n), q, -1)
        m = self.ids.shape[0]
        if m > 65536:
            if self._posmap is None:
                nmax = int(self.ids.max()) + 1
                pm = np.full(nmax, -1, dtype=np.int64)
                pm[self.ids] = np.arange(m, dtype=np.int64)
                self._posmap = pm
            pm = self._posmap
            ok = (q >= 0) & (q < pm.shape[0])
            return np.where(ok, pm[np.where(ok, q, 0)], -1)
        if self._sorted_ids is None or self._sorted_pos is None:
            order = np.argsort(self.ids, kind="stable")
            self._sorted_ids = self.ids[order]
            self._sorted_pos = order
        sorted_ids, sorted_pos = self._sorted_ids, self._sorted_pos
        j = np.searchsorted(sorted_ids, q)
        jc = np.minimum(j, m - 1)
        hit = sorted_ids[jc] == q
        return np.where(hit, sorted_pos[jc], -1)

    def probs_of(self, q: np.ndarray) -> np.ndarray:
        pos = self.positions(q)
        out = np.zeros(pos.shape[0], dtype=np.float64)
        ok = pos >= 0
        if ok.any():
            out[ok] = np.exp(self.lg[pos[ok]].astype(np.float64) - self.ref) / self.z
        return out

    def weights(self) -> np.ndarray:
        """Unnormalised weights exp(lg - ref) over the snapshot (float64 if small)."""
        if self.w is not None:
            return self.w if self.lg.shape[0] > _SMALL else self.w.astype(np.float64)
        if self.lg.shape[0] <= _SMALL:
            return np.exp(self.lg.astype(np.float64) - self.ref)
        return np.exp(self.lg - _F32(self.ref))


def _raw_mass(snap: _Snap, raw: _Raw) -> float:
    if snap.ids is None:
        return 1.0
    yv = raw.y[snap.ids]
    if yv.shape[0] <= _SMALL:
        return float(np.exp(yv.astype(np.float64)).sum()) / raw.s
    return float(np.exp(yv).sum(dtype=np.float64)) / raw.s


# --------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------


class ChainResult:
    """The result of the chain on one step's logits. Not shared across threads.

    ``ids`` / ``probs``: the candidates left after the whole chain and their final
    probabilities (sum 1), in llama.cpp's final candidate order. ``top_ids``: the top-N ids by
    raw logit, descending. ``stages``: one ``StageInfo`` per active stage, in chain order, with
    ``probs`` aligned with ``top_ids``."""

    def __init__(self, raw: _Raw, top_ids: np.ndarray, snaps: list[_Snap],
                 stage_meta: list[tuple[str, int, float, float]], greedy: bool, changed: bool):
        self._raw = raw
        self._snaps = snaps  # snaps[0] is raw; snaps[i + 1] is after stage i
        self.greedy = greedy
        self.n_vocab = int(raw.y.shape[0])
        self.top_ids = top_ids
        self.logsumexp_raw = raw.lse
        self.entropy_raw = raw.entropy
        final = snaps[-1]
        self._final = final
        self._ids: np.ndarray | None = None
        self._probs: np.ndarray | None = None
        self.stages = tuple(
            StageInfo(name, kept, rm, rr, tuple(float(v) for v in snap.probs_of(top_ids)))
            for (name, kept, rm, rr), snap in zip(stage_meta, snaps[1:])
        )
        names = [m[0] for m in stage_meta]
        self._grammar_at = names.index("grammar") if "grammar" in names else None
        if not changed:
            self.entropy_final = self.entropy_raw
            self.kl_final_raw = 0.0
        else:
            w = final.weights()
            z = float(w.sum(dtype=np.float64))
            lq = final.lg - _F32(final.ref) if w.dtype == _F32 else final.lg.astype(np.float64) - final.ref
            ly = raw.y if final.ids is None else raw.y[final.ids]
            if w.dtype != _F32:
                ly = ly.astype(np.float64)
            with np.errstate(invalid="ignore"):
                pos = w > 0
                ex_lq = float(np.einsum("i,i->", w[pos], lq[pos])) / z
                ex_ly = float(np.einsum("i,i->", w[pos], ly[pos])) / z
            logz, logs = math.log(z), math.log(raw.s)
            self.entropy_final = max(0.0, logz - ex_lq)
            self.kl_final_raw = max(0.0, (ex_lq - logz) - (ex_ly - logs))

    # -- arrays of the final distribution (built on first use: they can be vocabulary-sized)

    @property
    def ids(self) -> np.ndarray:
        if self._ids is None:
            f = self._final
            self._ids = np.arange(self.n_vocab, dtype=np.int64) if f.ids is None else f.ids
        return self._ids

    @property
    def probs(self) -> np.ndarray:
        if self._probs is None:
            w = self._final.weights().astype(np.float64, copy=False)
            self._probs = w / w.sum()
        return self._probs

    @property
    def kept(self) -> int:
        return len(self._final)

    # -- lookups

    def _valid(self, token_id: int) -> bool:
        return 0 <= int(token_id) < self.n_vocab

    def p_raw(self, token_id: int) -> float:
        if not self._valid(token_id):
            return 0.0
        return math.exp(float(self._raw.y[int(token_id)])) / self._raw.s

    def p_final(self, token_id: int) -> float:
        """Final probability of ``token_id``; 0 if a stage removed it."""
        if not self._valid(token_id):
            return 0.0
        return float(self._final.probs_of(np.array([int(token_id)]))[0])

    def rank(self, token_id: int) -> int:
        """1 for the most likely raw token (ties share the better rank)."""
        if not self._valid(token_id):
            return self.n_vocab
        y = self._raw.y
        v = y[int(token_id)]
        top = self.top_ids
        if top.shape[0] and v >= y[top[-1]]:  # among the top-N: every better token is too
            return int(np.count_nonzero(y[top] > v)) + 1
        return int(np.count_nonzero(y > v)) + 1  # a pass over the whole vocabulary

    def draw(self, rng: np.random.Generator) -> int:
        """Greedy: the argmax of the final distribution. Otherwise one draw from it."""
        f = self._final
        if self.greedy or len(f) == 1:
            i = int(np.argmax(f.lg))
        else:
            i = _sample_index(f.weights(), float(rng.random()))
        return i if f.ids is None else int(f.ids[i])

    def to_step(self, token_id: int, *, index: int, position: int, text: str, piece: str,
                piece_of: Callable[[int], str], forced: bool = False) -> Step:
        """The ``Step`` record: ``top`` is the top-N raw tokens plus the chosen token when it is
        not among them; every ``StageInfo.probs`` is aligned with that ``top``."""
        token_id = int(token_id)
        top = [int(t) for t in self.top_ids]
        stages = self.stages
        if token_id not in top:
            top.append(token_id)
            q = np.array([token_id], dtype=np.int64)
            stages = tuple(
                StageInfo(s.name, s.kept, s.removed_mass, s.removed_raw,
                          s.probs + (float(snap.probs_of(q)[0]),))
                for s, snap in zip(self.stages, self._snaps[1:])
            )
        q = np.array(top, dtype=np.int64)
        praw = np.exp(self._raw.y[q].astype(np.float64)) / self._raw.s
        pfin = self._final.probs_of(q)
        alts = tuple(TokenAlt(t, piece_of(t), float(a), float(b)) for t, a, b in zip(top, praw, pfin))
        g_before = g_after = None
        if self._grammar_at is not None:  # the chosen token's probability entering / leaving the grammar
            one = np.array([token_id], dtype=np.int64)
            g_before = float(self._snaps[self._grammar_at].probs_of(one)[0])
            g_after = float(self._snaps[self._grammar_at + 1].probs_of(one)[0])
        return Step(
            index=index,
            position=position,
            token_id=token_id,
            token=text,
            piece=piece,
            p_raw=self.p_raw(token_id),
            p_final=self.p_final(token_id),
            rank=self.rank(token_id),
            entropy_raw=self.entropy_raw,
            entropy_final=self.entropy_final,
            kl_final_raw=self.kl_final_raw,
            top=alts,
            stages=stages,
            kept=self.kept,
            forced=forced,
            grammar_p_before=g_before,
            grammar_p_after=g_after,
        )


# --------------------------------------------------------------------------------------
# the chain
# --------------------------------------------------------------------------------------


def _penalties_active(s: SamplerSettings) -> bool:
    if s.penalty_last_n <= 0:
        return False
    return not (_F32(s.repeat_penalty) == 1 and _F32(s.frequency_penalty) == 0
                and _F32(s.presence_penalty) == 0)


def apply_chain(logits: np.ndarray, settings: SamplerSettings, history: Sequence[int] = (),
                top_n: int | None = None, grammar=None) -> ChainResult:
    """Run the chain on one step's logits (1-D, the whole vocabulary; never modified).

    ``history``: token ids seen so far; the penalties use its last ``penalty_last_n``.
    ``top_n`` defaults to ``settings.top_n``. ``grammar`` (an object with ``allowed(ids) ->
    bool mask``, e.g. ``backends.grammar.Grammar``) adds the "grammar" stage right after the
    penalties (``_stage_grammar``); it is recorded like every other stage."""
    raw = _Raw(logits)
    x = raw.x
    assert x is not None  # dropped only at the end of this function
    n = x.shape[0]
    top_n = settings.top_n if top_n is None else top_n
    top_n = max(0, min(int(top_n), n))

    pen = _penalties_active(settings)
    k = int(settings.top_k)
    k_on = k > 0
    typ = _F32(settings.typical_p)
    top_p = _F32(settings.top_p)
    min_p = _F32(settings.min_p)
    temp = _F32(settings.temperature)
    min_keep = max(0, int(settings.min_keep))

    # one selection serves both the raw top-N and a top-k on the raw logits
    want = top_n
    if k_on and not pen and grammar is None and k < n:
        want = max(top_n, k)
    top_sel = _top_desc(x, want)
    top_ids = top_sel[:top_n].astype(np.int64, copy=False)

    c = _Cands(None, x, False, (raw.m32, raw.e))
    snaps = [_Snap(None, raw.y, 0.0, raw.s, raw.e, raw.m)]
    meta: list[tuple[str, int, float, float]] = []
    raw_in = 1.0

    def record(name: str, new: _Cands, filtering: bool | np.bool_) -> None:
        nonlocal raw_in
        prev = snaps[-1]
        snap = _Snap.of(new, raw)
        if filtering:
            if len(new) == len(prev):
                removed, raw_out = 0.0, raw_in
            else:
                kept_mass = snap.z * math.exp(snap.xref - prev.xref) / prev.z
                removed = min(1.0, max(0.0, 1.0 - kept_mass))
                raw_out = _raw_mass(snap, raw)
        else:
            removed, raw_out = 0.0, raw_in
        meta.append((name, len(new), removed, max(0.0, raw_in - raw_out)))
        snaps.append(snap)
        raw_in = raw_out

    for name in SAMPLER_ORDER:
        if name == "penalties" and pen:
            last_n = int(settings.penalty_last_n)
            try:
                tail = history[-last_n:]
            except TypeError:  # an iterable without slicing
                tail = list(history)[-last_n:]
            window = np.asarray(tail, dtype=np.int64).reshape(-1)
            c = _stage_penalties(c, settings, window)
            record(name, c, False)
        if name == "penalties" and grammar is not None:
            c = _stage_grammar(c, grammar)
            record("grammar", c, True)
        elif name == "top_k" and k_on:
            c = _stage_top_k(c, k, None if pen or grammar is not None else top_sel)
            record(name, c, True)
        elif name == "typical" and typ < 1:
            c = _stage_typical(c, typ, min_keep)
            record(name, c, True)
        elif name == "top_p" and top_p < 1:
            c = _stage_top_p(c, top_p, min_keep)
            record(name, c, True)
        elif name == "min_p" and min_p > 0:
            c = _stage_min_p(c, min_p, min_keep)
            record(name, c, True)
        elif name == "temperature" and temp != 1:
            c = _stage_temperature(c, temp)
            record(name, c, temp <= 0)

    changed = not (snaps[-1].ids is None and snaps[-1].lg is raw.y)
    raw.x = None  # may be the caller's (llama.cpp's) memory: keep no reference to it
    return ChainResult(raw, top_ids, snaps, meta, greedy=bool(temp <= 0), changed=changed)


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------


def benchmark_chain(n_vocab: int = 262144, steps: int = 200, seed: int = 0) -> None:
    """Print ms/step of ``apply_chain`` (plus ``draw``) for a few settings on random logits."""
    rng = np.random.default_rng(seed)
    logit_sets = []
    for _ in range(8):
        v = rng.normal(0.0, 2.0, n_vocab).astype(_F32)
        hot = rng.choice(n_vocab, 30, replace=False)
        v[hot] += rng.uniform(10.0, 20.0, 30).astype(_F32)  # a model-like peaked head
        logit_sets.append(v)
    history = [int(t) for t in rng.integers(0, n_vocab, 256)]
    base = SamplerSettings()
    cases = [
        ("default (T .8, k 40, p .95, min_p .05)", base),
        ("neutral (T 1, k 0, p 1, min_p 0)", base.replace(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)),
        ("greedy (T 0, others default)", base.replace(temperature=0.0)),
        ("default + penalties (1.1, .1, .1)", base.replace(repeat_penalty=1.1, frequency_penalty=0.1,
                                                         presence_penalty=0.1)),
        ("top_p .95 only (k 0)", base.replace(top_k=0, min_p=0.0, temperature=1.0)),
        ("min_p .05 only (k 0, p 1)", base.replace(top_k=0, top_p=1.0, temperature=1.0)),
        ("typical .9 + default", base.replace(typical_p=0.9)),
        ("typical .9 only (k 0, p 1, min_p 0)", base.replace(top_k=0, top_p=1.0, min_p=0.0,
                                                           typical_p=0.9, temperature=1.0)),
    ]
    flat = [rng.normal(0.0, 1.0, n_vocab).astype(_F32) for _ in range(2)]
    draw_rng = np.random.default_rng(1)
    print(f"apply_chain + draw, vocabulary {n_vocab}, float32 input")
    for label, s in cases:
        reps = steps if s.typical_p >= 1 or s.top_k > 0 else max(10, steps // 10)
        apply_chain(logit_sets[0], s, history).draw(draw_rng)
        t0 = time.perf_counter()
        for i in range(reps):
            apply_chain(logit_sets[i % len(logit_sets)], s, history).draw(draw_rng)
        ms = (time.perf_counter() - t0) / reps * 1e3
        print(f"  {label:42s} {ms:7.3f} ms/step")
    s = base.replace(top_k=0, min_p=0.0, temperature=1.0)
    t0 = time.perf_counter()
    for i in range(10):
        apply_chain(flat[i % 2], s).draw(draw_rng)
    ms = (time.perf_counter() - t0) / 10 * 1e3
    print(f"  {'top_p .95 only, flat N(0,1) logits':42s} {ms:7.3f} ms/step  (needs a full sort)")
    t0 = time.perf_counter()
    for i in range(steps):
        softmax_stats(logit_sets[i % len(logit_sets)])
    print(f"  {'softmax_stats alone':42s} {(time.perf_counter() - t0) / steps * 1e3:7.3f} ms/step")


if __name__ == "__main__":
    benchmark_chain()
