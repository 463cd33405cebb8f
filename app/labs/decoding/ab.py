"""A/B comparison of two runs: how far apart their next-token distributions are, step by step.

Owns: ``step_distance`` (KL both ways, total variation and Jensen-Shannon over the union of two
steps' top-N), ``ab_compare`` (two recorded runs: lists of ``Step`` or their dicts, so local and
remote runs alike) and ``ab_run`` (make the two runs, then compare).

Threads: ``step_distance`` and ``ab_compare`` are pure, safe on any thread; ``ab_run`` runs on
the thread that calls it, which must own both backends (the lab's worker thread in the window).
``cancel`` (a ``threading.Event``) ends a run early; what it produced is compared. No Qt.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from app.core.jsonsafe import json_safe
from backends.base import SamplerSettings, Step, TokenAlt

from .remote import is_remote

if TYPE_CHECKING:
    from backends.kinds import Backend

__all__ = ["step_distance", "ab_compare", "ab_run"]


def _as_step(s: Step | dict) -> Step:
    return s if isinstance(s, Step) else Step.from_dict(s)


def _dist(step: Step, keyed: Callable[[TokenAlt], Any], which: str) -> tuple[dict[Any, float], float, float]:
    """(probabilities of the shown tokens, mass outside them, the smallest shown probability)."""
    ps: dict[Any, float] = {}
    for a in step.top:
        p = a.p_final if which == "final" else a.p_raw
        p = min(max(float(p), 0.0), 1.0) if p is not None and math.isfinite(p) else 0.0
        ps.setdefault(keyed(a), p)
    outside = max(0.0, 1.0 - math.fsum(ps.values()))
    return ps, outside, min(ps.values()) if ps else 0.0


def step_distance(a: Step | dict, b: Step | dict, which: str = "final") -> dict[str, Any]:
    """Distance between two steps' next-token distributions over the union U of their top-N.

    ``which``: "final" (what each run sampled from; equals raw for a server) or "raw". A token
    of U missing from one side's top-N gets, on that side, an equal share of that side's mass
    outside its top-N, capped at its smallest shown probability (an unseen token is no more
    likely than a shown one); then each side is renormalised over U. Returned: ``kl_ab`` =
    KL(A || B) and ``kl_ba`` (nats; inf when one side gives 0 where the other does not),
    ``tv`` (total variation), ``js`` (Jensen-Shannon, nats), ``mass_outside_a``/``_b`` (each
    side's mass outside its own top-N), ``n_union``, ``agree`` (same chosen token) and the two
    chosen tokens. Tokens are matched by id when every alternative has one, else by text."""
    a, b = _as_step(a), _as_step(b)
    if which not in ("final", "raw"):
        raise ValueError("which must be 'final' or 'raw'")
    by_id = all(x.id is not None for x in a.top + b.top) and a.token_id is not None and b.token_id is not None
    keyed = (lambda x: x.id) if by_id else (lambda x: x.token)
    pa, oa, ma = _dist(a, keyed, which)
    pb, ob, mb = _dist(b, keyed, which)
    union = list(dict.fromkeys(list(pa) + list(pb)))

    def filled(p: dict, outside: float, smallest: float) -> np.ndarray:
        missing = [k for k in union if k not in p]
        share = min(smallest, outside / len(missing)) if missing else 0.0
        v = np.array([p.get(k, share) for k in union], dtype=np.float64)
        s = v.sum()
        return v / s if s > 0 else v

    va, vb = filled(pa, oa, ma), filled(pb, ob, mb)

    def kl(p: np.ndarray, q: np.ndarray) -> float:
        m = p > 0
        if np.any(q[m] <= 0):
            return math.inf
        return float(np.sum(p[m] * np.log(p[m] / q[m])))

    mid = 0.5 * (va + vb)
    key_a = a.token_id if by_id else a.token
    key_b = b.token_id if by_id else b.token
    return {"kl_ab": kl(va, vb), "kl_ba": kl(vb, va), "tv": 0.5 * float(np.abs(va - vb).sum()),
            "js": 0.5 * kl(va, mid) + 0.5 * kl(vb, mid), "mass_outside_a": oa, "mass_outside_b": ob,
            "n_union": len(union), "agree": key_a == key_b, "token_a": a.token, "token_b": b.token,
            "token_id_a": a.token_id, "token_id_b": b.token_id}


def ab_compare(steps_a: Sequence[Step | dict], steps_b: Sequence[Step | dict], which: str = "final") -> dict:
    """Compare two recorded runs step by step (``Step`` lists or their ``to_dict``; local or
    remote). Per step k < min(len): ``step_distance`` plus ``step`` and ``after_fork`` (the
    runs had already parted before k, so the two distributions follow different texts).
    Summary: ``steps``, ``first_fork`` (first k whose chosen tokens differ; None), ``agreement``
    (fraction of compared steps with the same token), ``n_compared``, ``len_a``, ``len_b``,
    means of ``kl_ab``/``tv``/``js`` over the steps up to and including the fork (same text
    before them: ``mean_*_same_context``) and over all compared steps (``mean_*``; KL means
    are inf when any term is), ``which``. JSON-safe (inf -> None)."""
    sa, sb = [_as_step(s) for s in steps_a], [_as_step(s) for s in steps_b]
    n = min(len(sa), len(sb))
    rows = []
    fork = None
    for k in range(n):
        d = step_distance(sa[k], sb[k], which)
        d = {"kind": "ab_step", "step": k, "after_fork": fork is not None and k > fork, **d}
        if fork is None and not d["agree"]:
            fork = k
        rows.append(d)
    if fork is None and len(sa) != len(sb):
        fork = n

    def mean(key: str, rs: list[dict]) -> float | None:
        vals = [r[key] for r in rs]
        return math.fsum(vals) / len(vals) if vals else None

    same = [r for r in rows if not r["after_fork"]]
    out = {"which": which, "steps": rows, "first_fork": fork, "n_compared": n, "len_a": len(sa), "len_b": len(sb),
           "agreement": (sum(r["agree"] for r in rows) / n) if n else None}
    for key in ("kl_ab", "kl_ba", "tv", "js"):
        out[f"mean_{key}"] = mean(key, rows)
        out[f"mean_{key}_same_context"] = mean(key, same)
    return json_safe(out)


def _run_steps(backend: Backend, prompt: str, settings: SamplerSettings, cancel: threading.Event | None,
               parse_special: bool, messages: list[dict] | None) -> list[Step]:
    if is_remote(backend):
        items = backend.stream(None if messages else prompt, settings, messages=messages, cancel=cancel)
        return [it for it in items if isinstance(it, Step)]
    from app.core.session import GenerationSession

    backend.reset()
    session = GenerationSession(backend, prompt, settings, parse_special=parse_special)
    return [it for it in session.run(cancel) if isinstance(it, Step)]


def ab_run(backend_a: Backend, backend_b: Backend, prompt: str, settings_a: SamplerSettings,
           settings_b: SamplerSettings, cancel: threading.Event | None = None, *, which: str = "final",
           parse_special: bool = False, messages: list[dict] | None = None) -> dict:
    """Make run A then run B of ``prompt`` (two models, or one model with two settings; local
    runs start from an empty cache, remote ones are one request each) and ``ab_compare`` them.
    The result also holds the runs as ``a`` and ``b`` (lists of ``Step.to_dict``). Use
    ``top_n`` of 10-20 in the settings: the distances only see the union of the top-N."""
    steps_a = _run_steps(backend_a, prompt, settings_a, cancel, parse_special, messages)
    steps_b = _run_steps(backend_b, prompt, settings_b, cancel, parse_special, messages)
    out = ab_compare(steps_a, steps_b, which)
    out["a"] = [json_safe(s.to_dict()) for s in steps_a]
    out["b"] = [json_safe(s.to_dict()) for s in steps_b]
    return out
