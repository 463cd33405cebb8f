"""A/B comparison of two runs: how far apart their next-token distributions are, step by step.

Owns: ``step_distance`` (KL both ways, total variation and Jensen-Shannon over the union of two
steps' top-N, as a dict of plain numbers), ``ab_compare`` (two recorded runs: lists of ``Step``
or their dicts, so local and remote runs alike; an ``ABSummary`` with an ``ABStep`` per compared
step), ``ab_run`` (make the two runs, then compare) and ``iter_ab`` (the lab's A/B job: ``ab_run``
as a generator of its ``ABStep`` records returning the ``ABSummary``).

Threads: ``step_distance`` and ``ab_compare`` are pure, safe on any thread; ``ab_run`` and
``iter_ab`` run on the thread that calls them, which must own both backends (the lab's worker
thread in the window). ``cancel`` (a ``threading.Event``) ends a run early; what it produced is
compared. No Qt.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, Callable, Generator, Sequence

import numpy as np

from app.core.jsonsafe import json_safe
from backends.base import SamplerSettings, Step, TokenAlt

from .records import ABStep, ABSummary, defined, or_nan
from .remote import is_remote

if TYPE_CHECKING:
    from backends.kinds import Backend

__all__ = ["step_distance", "ab_compare", "ab_run", "iter_ab"]


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


def _ab_step(k: int, after_fork: bool, d: dict[str, Any]) -> ABStep:
    """A ``step_distance`` at step ``k`` as its record (an infinite KL divergence as None)."""
    return ABStep(k, after_fork, defined(d["kl_ab"]), defined(d["kl_ba"]), or_nan(d["tv"]), or_nan(d["js"]),
                  or_nan(d["mass_outside_a"]), or_nan(d["mass_outside_b"]), int(d["n_union"]), bool(d["agree"]),
                  d["token_a"], d["token_b"], None if d["token_id_a"] is None else int(d["token_id_a"]),
                  None if d["token_id_b"] is None else int(d["token_id_b"]))


def ab_compare(steps_a: Sequence[Step | dict], steps_b: Sequence[Step | dict], which: str = "final") -> ABSummary:
    """Compare two recorded runs step by step (``Step`` lists or their ``to_dict``; local or
    remote). Per step k < min(len) an ``ABStep``: ``step_distance`` plus ``step`` and
    ``after_fork`` (the runs had already parted before k, so the two distributions follow
    different texts). The ``ABSummary``: ``steps``, ``first_fork`` (first k whose chosen tokens
    differ; None), ``agreement`` (fraction of compared steps with the same token; None over
    none), ``n_compared``, ``len_a``, ``len_b``, means of ``kl_ab``/``kl_ba``/``tv``/``js`` over
    the steps up to and including the fork (same text before them: ``mean_*_same_context``) and
    over all compared steps (``mean_*``); a mean is None over no step, and a KL mean is None
    (infinite) when any of its terms is. ``a`` and ``b`` are left empty (``ab_run`` fills them)."""
    sa, sb = [_as_step(s) for s in steps_a], [_as_step(s) for s in steps_b]
    n = min(len(sa), len(sb))
    rows: list[tuple[bool, dict[str, Any]]] = []  # (after the fork, the distances) per step
    fork = None
    for k in range(n):
        d = step_distance(sa[k], sb[k], which)
        rows.append((fork is not None and k > fork, d))
        if fork is None and not d["agree"]:
            fork = k
    if fork is None and len(sa) != len(sb):
        fork = n

    def mean(key: str, same_context: bool) -> float | None:
        vals = [d[key] for after, d in rows if not (same_context and after)]
        return defined(math.fsum(vals) / len(vals)) if vals else None

    return ABSummary(which, tuple(_ab_step(k, after, d) for k, (after, d) in enumerate(rows)), fork, n, len(sa),
                     len(sb), (sum(d["agree"] for _after, d in rows) / n) if n else None,
                     mean_kl_ab=mean("kl_ab", False), mean_kl_ab_same_context=mean("kl_ab", True),
                     mean_kl_ba=mean("kl_ba", False), mean_kl_ba_same_context=mean("kl_ba", True),
                     mean_tv=mean("tv", False), mean_tv_same_context=mean("tv", True),
                     mean_js=mean("js", False), mean_js_same_context=mean("js", True))


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
           parse_special: bool = False, messages: list[dict] | None = None) -> ABSummary:
    """Make run A then run B of ``prompt`` (two models, or one model with two settings; local
    runs start from an empty cache, remote ones are one request each) and ``ab_compare`` them.
    The ``ABSummary`` also holds the runs as ``a`` and ``b`` (``Step.to_dict`` each, JSON-ready).
    Use ``top_n`` of 10-20 in the settings: the distances only see the union of the top-N."""
    steps_a = _run_steps(backend_a, prompt, settings_a, cancel, parse_special, messages)
    steps_b = _run_steps(backend_b, prompt, settings_b, cancel, parse_special, messages)
    return ab_compare(steps_a, steps_b, which).replace(a=tuple(json_safe(s.to_dict()) for s in steps_a),
                                                       b=tuple(json_safe(s.to_dict()) for s in steps_b))


def iter_ab(backend_a: Backend, backend_b: Backend, prompt: str, settings_a: SamplerSettings,
            settings_b: SamplerSettings, cancel: threading.Event | None = None, *, which: str = "final",
            parse_special: bool = False, messages: list[dict] | None = None) -> Generator[ABStep, None, ABSummary]:
    """``ab_run`` as the lab's job: the two runs are made and compared first, then every
    ``ABStep`` is yielded in step order; returns the ``ABSummary`` (with the steps and the runs)."""
    result = ab_run(backend_a, backend_b, prompt, settings_a, settings_b, cancel, which=which,
                    parse_special=parse_special, messages=messages)
    yield from result.steps
    return result
