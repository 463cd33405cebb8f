"""The sampler chain's arithmetic: float32 functions that round as C's do, sorting, drawing,
and one pass over the raw logits (``_Raw``, ``softmax_stats``; its two sums over the vocabulary
by llama.cpp's own vector kernels where they are there, ``backends.vec_kernels``).

Private to ``app.core.sampling``: the stages use these so their kept sets match llama.cpp's
float32 sums. Any thread (pure numpy); no Qt.
"""

from __future__ import annotations

import math

import numpy as np

from backends.vec_kernels import exp_sums

_F32 = np.float32
_EMPTY_IDS = np.zeros(0, dtype=np.int64)
#: the logit a banned token reads as: finite, so p * log p stays 0 instead of NaN
BANNED_LOGIT = _F32(-1e30)
# Above this many candidates the float64 work is done in float32 instead (speed).
_SMALL = 16384


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
    r = -(-k // step) + 4  # about r * step candidates: enough for k, few to sort (any r is exact)
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
    vals = v[cand]
    if vals.shape[0] > 4 * k:  # sort only the k best (and their ties, which keep position order)
        kth = np.partition(vals, vals.shape[0] - k)[vals.shape[0] - k]
        keep = vals >= kth
        cand, vals = cand[keep], vals[keep]
    order = _argsort_desc(vals)[:k]
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


def as_logits(logits) -> np.ndarray:
    """``logits`` as a non-empty 1-D float32 array (the same array when it already is one)."""
    x = np.asarray(logits)
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError("logits must be a non-empty 1-D array")
    return x if x.dtype == _F32 else x.astype(_F32)


class _ExpCache:
    """``ref`` and ``e = exp(lg - ref)`` (float32, numpy's exp) of a whole-vocabulary candidate
    array, kept so a whole-vocabulary stage needs no second exp (``_Raw`` offers the same two
    attributes, its ``e`` computed on first use)."""

    __slots__ = ("ref", "e")

    def __init__(self, ref: np.float32, e: np.ndarray) -> None:
        self.ref = ref
        self.e = e


#: from this many logits on, the sums of ``_Raw`` come from llama.cpp's vector kernels
_KERNEL_MIN = 4096


class _Raw:
    """One pass over the raw logits: max, shifted logits ``y``, log-sum-exp, entropy; ``e``
    (their exp) on first use.

    The two sums over the vocabulary (of exp(y) and exp(y) * y) come from llama.cpp's own SIMD
    kernels when they are there (``backends.vec_kernels``: a pass instead of three, 0.11 against
    0.25 ms for 262,144 logits), else from numpy; ``e`` is always numpy's float32 exp, computed
    only when a stage works on the whole vocabulary (the default chain, top-k first, never asks)."""

    __slots__ = ("x", "m", "m32", "y", "_e", "s", "lse", "entropy")

    def __init__(self, logits: np.ndarray, best: int | None = None, banned: np.ndarray | None = None) -> None:
        """``best``: the index of the largest logit when the caller knows it (its value is the
        max, unless a NaN or +inf makes the sums NaN and the careful pass takes over).
        ``banned``: token ids whose logits read as ``BANNED_LOGIT`` (then ``best`` is required:
        the best token that is not banned), so the caller's array is never copied to ban them."""
        x = as_logits(logits)
        m = x[best] if best is not None else x.max()
        e = None
        with np.errstate(invalid="ignore"):
            y = np.subtract(x, m)  # new array: the caller's memory is only read
            if banned is not None:
                y[banned] = BANNED_LOGIT - _F32(m)  # what a banned copy of x would give
            sums = exp_sums(y) if y.shape[0] >= _KERNEL_MIN else None
            if sums is not None:
                s, d = sums
            else:
                e = np.exp(y)
                s = float(e.sum())
                d = float(np.einsum("i,i->", e, y))  # no BLAS: OpenBLAS threads would spin
        if not (math.isfinite(float(m)) and math.isfinite(d) and s > 0):
            x, m, y, e, s, d = self._careful(x, banned)
        self.x: np.ndarray | None = x
        self.m32 = _F32(m)
        self.m = float(m)
        self.y = y
        self._e = e
        self.s = s
        self.lse = self.m + math.log(s)
        self.entropy = max(0.0, math.log(s) - d / s)

    @property
    def ref(self) -> np.float32:
        """The max: ``e`` is exp(logits - ref)."""
        return self.m32

    @property
    def e(self) -> np.ndarray:
        """exp(y), float32 (numpy's exp), computed on first use."""
        if self._e is None:
            with np.errstate(under="ignore"):
                self._e = np.exp(self.y)
        return self._e

    @staticmethod
    def _careful(x: np.ndarray, banned: np.ndarray | None = None):
        x = np.where(np.isnan(x), _F32(-np.inf), x)
        x = np.minimum(x, np.finfo(_F32).max).astype(_F32)
        if banned is not None:
            x[banned] = BANNED_LOGIT
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
