"""The chain itself: ``apply_chain`` runs the active stages in order on one step's logits and
records what each did.

Any thread (the generation worker in the app); no Qt.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from backends.base import SAMPLER_ORDER, SamplerSettings

from .numeric import _F32, _Raw, _top_desc
from .result import ChainResult, _raw_mass, _Snap
from .stages import (_Cands, _stage_grammar, _stage_min_p, _stage_penalties, _stage_temperature, _stage_top_k,
                     _stage_top_p, _stage_typical)


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
