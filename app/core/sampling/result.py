"""What the chain leaves: one distribution per stage (``_Snap``) and the ``ChainResult`` that
draws the next token and builds the ``Step`` record.

Private to ``app.core.sampling`` except ``ChainResult``. A ``ChainResult`` is not meant to be
shared across threads; no Qt.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from backends.base import SamplerSettings, StageInfo, Step, TokenAlt

from .adaptive import SamplerState, advance
from .numeric import _F32, _SMALL, _Raw, _sample_index
from .stages import _Cands


#: up to this many candidates a snapshot finds ids through a dictionary
_FEW = 64


class _Snap:
    """A distribution p_i = exp(lg_i - ref) / z over ``ids`` (None = the whole vocabulary).
    Holds only arrays this module owns."""

    __slots__ = ("ids", "lg", "ref", "z", "_w", "shift", "_sorted_ids", "_sorted_pos", "_posmap", "_posdict")

    def __init__(self, ids, lg, ref: float, z: float, w=None, shift: float = 0.0):
        self.ids = ids
        self.lg = lg
        self.ref = ref
        self.z = z
        self._w = w  # exp(lg - ref) when already known: an array, or a _Raw that computes it on use
        self.shift = shift  # the logit is lg + shift (the raw snapshot stores x - max)
        self._sorted_ids: np.ndarray | None = None
        self._sorted_pos: np.ndarray | None = None
        self._posmap: np.ndarray | None = None
        self._posdict: dict[int, int] | None = None

    @classmethod
    def of(cls, c: _Cands, raw: _Raw) -> "_Snap":
        n = len(c)
        if c.ids is None and c.lg is raw.x:
            return cls(None, raw.y, 0.0, raw.s, raw, raw.m)
        if c.ids is None and c.ecache is not None:
            m, e = c.ecache.ref, c.ecache.e
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
        """Position of each queried id (``q``: distinct ids) in this snapshot, -1 when absent."""
        q = np.asarray(q, dtype=np.int64)
        if self.ids is None:
            n = self.lg.shape[0]
            return np.where((q >= 0) & (q < n), q, -1)
        k = self._prefix(q)
        if k:  # past k every id is matched already: the rest of the (distinct) queries are absent
            pos = np.arange(q.shape[0], dtype=np.int64)
            pos[k:] = -1
            return pos
        return self._lookup(q)

    def _prefix(self, q: np.ndarray) -> int:
        """k > 0 when the ids begin with the first k queries, k = min(len(ids), len(q)): the
        usual case (the raw top-N after top-k, top-p and min-p, which keep the best in order)."""
        if self.ids is None:
            return 0
        k = min(self.ids.shape[0], q.shape[0])
        return k if k and bool((self.ids[:k] == q[:k]).all()) else 0

    def _lookup(self, q: np.ndarray) -> np.ndarray:
        assert self.ids is not None
        m = self.ids.shape[0]
        if m <= _FEW:  # a few candidates (after top-k): a dictionary beats six numpy calls
            if self._posdict is None:
                d: dict[int, int] = {}
                for i, v in enumerate(self.ids.tolist()):
                    d.setdefault(v, i)
                self._posdict = d
            get = self._posdict.get
            return np.fromiter((get(v, -1) for v in q.tolist()), dtype=np.int64, count=q.shape[0])
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
        """The probability of each of the distinct ids ``q`` (0 when absent)."""
        q = np.asarray(q, dtype=np.int64)
        k = self._prefix(q)
        if k:  # the usual case, in fewer steps than through ``positions``
            out = np.zeros(q.shape[0], dtype=np.float64)
            out[:k] = np.exp(self.lg[:k].astype(np.float64) - self.ref) / self.z
            return out
        pos = self.positions(q)
        out = np.zeros(pos.shape[0], dtype=np.float64)
        ok = pos >= 0
        if ok.any():
            out[ok] = np.exp(self.lg[pos[ok]].astype(np.float64) - self.ref) / self.z
        return out

    def weights(self) -> np.ndarray:
        """Unnormalised weights exp(lg - ref) over the snapshot (float64 if small)."""
        w = self._w
        if w is not None:
            if isinstance(w, _Raw):
                w = self._w = w.e
            return w if self.lg.shape[0] > _SMALL else w.astype(np.float64)
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


class ChainResult:
    """The result of the chain on one step's logits. Not shared across threads.

    ``ids`` / ``probs``: the candidates left after the whole chain and their final
    probabilities (sum 1), in llama.cpp's final candidate order. ``top_ids``: the top-N ids by
    raw logit, descending. ``stages``: one ``StageInfo`` per active stage, in chain order, with
    ``probs`` aligned with ``top_ids``."""

    def __init__(self, raw: _Raw, top_ids: np.ndarray, snaps: list[_Snap],
                 stage_meta: list[tuple[str, int, float, float, float | None]], greedy: bool, changed: bool,
                 settings: SamplerSettings | None = None, state: SamplerState | None = None,
                 adaptive_at: int | None = None):
        self._raw = raw
        self._settings = settings
        #: the stateful samplers' state this step used (``next_state`` gives the next one)
        self.state = state
        self._adaptive_at = adaptive_at
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
            StageInfo(name, kept, rm, rr, tuple(snap.probs_of(top_ids).tolist()), value)
            for (name, kept, rm, rr, value), snap in zip(stage_meta, snaps[1:])
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

    def next_state(self, token_id: int, drawn: bool = True) -> SamplerState | None:
        """The state of Mirostat and adaptive-p after ``token_id`` is taken (``drawn`` False:
        forced by the user); None when the chain was given none."""
        if self.state is None or self._settings is None:
            return self.state
        p_before = None
        if self._adaptive_at is not None:
            p_before = float(self._snaps[self._adaptive_at].probs_of(np.array([int(token_id)]))[0])
        return advance(self.state, self._settings, self.p_final(token_id), p_before, drawn)

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
        top = self.top_ids.tolist()
        stages = self.stages
        if token_id not in top:
            top.append(token_id)
            q = np.array([token_id], dtype=np.int64)
            stages = tuple(
                StageInfo(s.name, s.kept, s.removed_mass, s.removed_raw,
                          s.probs + (float(snap.probs_of(q)[0]),), s.value)
                for s, snap in zip(self.stages, self._snaps[1:])
            )
        q = np.array(top, dtype=np.int64)
        praw = np.exp(self._raw.y[q].astype(np.float64)) / self._raw.s
        pfin = self._final.probs_of(q)
        alts = tuple(TokenAlt(t, piece_of(t), a, b) for t, a, b in zip(top, praw.tolist(), pfin.tolist()))
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
