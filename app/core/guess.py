"""Guess the next token: a class game on top of step mode.

Owns:
- ``guess_token``: which token a typed guess means (the text as typed, or with a leading space,
  whichever the model finds likelier there: a class types "Paris" where the token is " Paris";
  a guess of several tokens counts by its first);
- ``shortlist``: the choices offered instead of typing, the step's most likely tokens shuffled
  (seeded, so a class replaying a run sees the same list);
- ``score_guess`` -> ``GuessRound``: the reveal, after the step is taken: the guess's rank and
  probability under the raw distribution (the model's own) and under the final one (after the
  sampler chain, as the run used it), the token actually drawn, and the points;
- ``GuessGame``: the rounds so far, the running score, and their CSV export.

Points: 3 for guessing the token drawn, else 2 for the model's favourite (raw rank 1), else 1 for
a guess among the model's 10 likeliest tokens, else 0 (``POINTS_RULE`` says it in words).

Pure Python and numpy; no Qt. The window calls it on the GUI thread while the model worker is
idle (between two steps), with the step's full logits from the what-if memory when they are
kept, else from the step's top-N alone (then a guess below the top-N has no exact rank).
"""

from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from backends.base import SamplerSettings, Step

from .sampling.chain import TokenizingEngine
from .whatif import chain_at

__all__ = ["GuessRound", "GuessGame", "guess_token", "shortlist", "score_guess", "POINTS_RULE", "CSV_COLUMNS"]

POINTS_RULE = ("3 points for the token drawn, 2 for the model's favourite, 1 for one of its 10 likeliest tokens, "
               "0 otherwise")
CSV_COLUMNS = ("round", "step", "guess", "guess_token", "rank_raw", "p_raw", "rank_final", "p_final", "drawn_token",
               "p_drawn", "points", "total")


@dataclass(frozen=True)
class GuessRound:
    """One reveal. ``rank_raw`` is None when the guess is below the step's top-N and no full
    logits were kept; ``rank_final`` is None when the samplers cut the guess (``p_final`` 0)."""

    step: int
    guess: str  # as typed or picked
    guess_id: int
    guess_token: str  # the token it was scored as
    rank_raw: int | None
    p_raw: float
    rank_final: int | None
    p_final: float
    drawn_id: int | None
    drawn_token: str
    p_drawn: float
    points: int
    exact: bool  # full logits were used (else the step's top-N)

    @property
    def hit(self) -> bool:
        return self.drawn_id is not None and self.guess_id == self.drawn_id


def guess_token(engine: TokenizingEngine, text: str, logits: np.ndarray | None = None,
                step: Step | None = None) -> int | None:
    """The token a typed guess means (None for an empty guess). Of the text as typed and with a
    leading space, the first token of the one the model finds likelier at this step (by the
    step's ``logits``, else its top-N); as typed when neither tells."""
    if not text or not text.strip():
        return None
    variants = [text] if text.startswith((" ", "\n")) else [text, " " + text]
    ids = []
    for v in variants:
        toks = engine.tokenize(v, add_special=False)
        if toks:
            ids.append(int(toks[0]))
    if not ids:
        return None
    if logits is not None:
        return max(ids, key=lambda t: float(logits[t]))
    if step is not None:
        p = {a.id: a.p_raw for a in step.top if a.id is not None}
        return max(ids, key=lambda t: p.get(t, 0.0))
    return ids[0]


def shortlist(step: Step, n: int = 5, seed: int = 0) -> list[tuple[int, str]]:
    """(token id, text) of the step's ``n`` likeliest tokens (raw), shuffled by ``seed``."""
    top = sorted((a for a in step.top if a.id is not None), key=lambda a: -a.p_raw)[:max(1, n)]
    out = [(int(a.id), a.token) for a in top if a.id is not None]
    random.Random(seed).shuffle(out)
    return out


def score_guess(guess: str, guess_id: int, step: Step, *, logits: np.ndarray | None,
                settings: SamplerSettings, prompt_tokens: Sequence[int], steps: Sequence[Step], index: int,
                engine: TokenizingEngine, piece_of) -> GuessRound:
    """The reveal of ``guess`` (token ``guess_id``) at step ``index`` of a run (``steps``; the
    step taken is ``step``). With the step's full ``logits``: exact ranks and probabilities, the
    final ones from our chain with the run's ``settings`` on them; without: from ``step.top``."""
    drawn = step.token_id
    if logits is not None:
        lg = np.asarray(logits, dtype=np.float64)
        m = float(lg.max())
        lse = m + math.log(float(np.exp(lg - m).sum()))
        p_raw = math.exp(float(lg[guess_id]) - lse)
        rank_raw: int | None = int(np.count_nonzero(lg > lg[guess_id])) + 1
        res = chain_at(logits, settings, prompt_tokens, steps, index, engine)
        p_final = res.p_final(guess_id)
        rank_final = int(np.count_nonzero(res.probs > p_final)) + 1 if p_final > 0 else None
        exact = True
    else:
        alts = {a.id: a for a in step.top if a.id is not None}
        a = alts.get(guess_id)
        by_raw = sorted(alts.values(), key=lambda x: -x.p_raw)
        by_final = sorted((x for x in alts.values() if x.p_final > 0), key=lambda x: -x.p_final)
        if a is not None:
            p_raw, p_final = a.p_raw, a.p_final
            rank_raw = 1 + sum(x.p_raw > a.p_raw for x in by_raw)
            rank_final = 1 + sum(x.p_final > a.p_final for x in by_final) if a.p_final > 0 else None
        else:  # below the top-N: its probabilities are at most the smallest shown
            p_raw, p_final, rank_raw, rank_final = 0.0, 0.0, None, None
        exact = False
    hit = drawn is not None and guess_id == drawn
    points = 3 if hit else 2 if rank_raw == 1 else 1 if rank_raw is not None and rank_raw <= 10 else 0
    return GuessRound(step=index, guess=guess, guess_id=int(guess_id), guess_token=piece_of(int(guess_id)),
                      rank_raw=rank_raw, p_raw=float(p_raw), rank_final=rank_final, p_final=float(p_final),
                      drawn_id=drawn, drawn_token=step.piece or step.token, p_drawn=float(step.p_final),
                      points=points, exact=exact)


@dataclass
class GuessGame:
    """The rounds of one game and the running score (GUI thread)."""

    rounds: list[GuessRound] = field(default_factory=list)

    @property
    def score(self) -> int:
        return sum(r.points for r in self.rounds)

    def add(self, r: GuessRound) -> None:
        self.rounds.append(r)

    def reset(self) -> None:
        self.rounds.clear()

    def to_csv(self) -> str:
        """The rounds as CSV (``CSV_COLUMNS``): one row per round, with the running total."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        total = 0
        for i, r in enumerate(self.rounds, 1):
            total += r.points
            w.writerow([i, r.step, _cell(r.guess), _cell(r.guess_token), "" if r.rank_raw is None else r.rank_raw,
                        f"{r.p_raw:.6g}", "" if r.rank_final is None else r.rank_final, f"{r.p_final:.6g}",
                        _cell(r.drawn_token), f"{r.p_drawn:.6g}", r.points, total])
        return buf.getvalue()


def _cell(text: str) -> str:
    """A cell a spreadsheet shows as text: a leading =, +, - or @ would be read as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
