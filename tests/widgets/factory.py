"""Synthetic ``Step`` and ``Trace`` records for the widget tests (no model needed)."""

from __future__ import annotations

import math

from app.core.trace import Trace
from backends.base import StageInfo, Step, TokenAlt


def _entropy(ps) -> float:
    return float(-sum(p * math.log(p) for p in ps if p > 0))


def make_step(
    i: int,
    token: str = "tok",
    *,
    p_raw: float = 0.5,
    p_final: float | None = None,
    alts: list[tuple[str, float]] | None = None,
    token_id: int | None = None,
    stages: bool = True,
    estimated: bool = False,
    unseen_mass: float = 0.0,
    forced: bool = False,
    piece: str | None = None,
) -> Step:
    """Step ``i`` choosing ``token`` with raw probability ``p_raw``.

    ``alts`` are the other candidates (text, p_raw); by default three. The chosen token is put in
    ``top`` sorted by p_raw with ids 1000*i + rank. Final probabilities sharpen the raw ones
    (squared and renormalised over the top); a "top_k" stage keeps the best two.
    """
    if alts is None:
        rest = max(0.0, 1.0 - p_raw)
        alts = [(f"a{i}", rest * 0.4), (f"b{i}", rest * 0.2), (f"c{i}", rest * 0.1)]
    chosen_id = token_id if token_id is not None else 1000 * i
    cands = [(chosen_id, token, p_raw)] + [(1000 * i + k + 1, t, p) for k, (t, p) in enumerate(alts)]
    cands.sort(key=lambda c: -c[2])
    sq = [c[2] ** 2 for c in cands]
    z = sum(sq) or 1.0
    finals = [s / z for s in sq]
    top = tuple(TokenAlt(cid, t, pr, pf) for (cid, t, pr), pf in zip(cands, finals))
    rank = 1 + [c[0] for c in cands].index(chosen_id)
    chosen_final = finals[rank - 1] if p_final is None else p_final
    stage_list: tuple[StageInfo, ...] = ()
    if stages:
        k = min(2, len(cands))
        kept_mass = sum(c[2] for c in cands[:k])
        probs = tuple((c[2] / kept_mass if j < k else 0.0) for j, c in enumerate(cands))
        stage_list = (
            StageInfo("top_k", k, 1.0 - kept_mass, 1.0 - kept_mass, probs),
            StageInfo("temperature", k, 0.0, 0.0, tuple(finals)),
        )
    return Step(
        index=i,
        position=10 + i,
        token_id=chosen_id,
        token=token,
        piece=token if piece is None else piece,
        p_raw=p_raw,
        p_final=chosen_final,
        rank=rank,
        entropy_raw=_entropy([c[2] for c in cands]),
        entropy_final=_entropy(finals),
        kl_final_raw=0.1,
        top=top,
        stages=stage_list,
        kept=len(cands),
        forced=forced,
        estimated=estimated,
        unseen_mass=unseen_mass,
    )


def make_trace(tokens: list[str], prompt: str = "", p: list[float] | None = None) -> Trace:
    trace = Trace(prompt=prompt)
    for i, tok in enumerate(tokens):
        trace.append(make_step(i, tok, p_raw=(p[i] if p else 0.3 + 0.6 * ((i * 37) % 10) / 10)))
    return trace


def wait_saved(window, qtbot, timeout: int = 60_000) -> None:
    """Wait until every run-store write handed to the store-writer thread is done (runs and lab
    records are saved off the GUI thread, as they arrive)."""
    writer = window.controller.writer
    if writer is not None:
        qtbot.waitUntil(lambda: writer.idle, timeout=timeout)
