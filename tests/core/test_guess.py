"""The guess game's scoring on small cases: which token a typed guess means, the reveal from a
step's top-N when no logits are kept, the points rule, and a CSV a spreadsheet reads as text."""

from __future__ import annotations

import csv
import io

from app.core.guess import GuessGame, guess_token, score_guess, shortlist
from backends.base import SamplerSettings, Step, TokenAlt

VOCAB = {"Paris": [1], " Paris": [2], " Lyon": [3], "=1+1": [4, 5]}


class Engine:
    def tokenize(self, text, *, add_special=True, parse_special=False):
        return VOCAB.get(text, [9])

    def piece(self, t):
        return {1: "Paris", 2: " Paris", 3: " Lyon", 4: "=1", 5: "+1"}.get(t, "?")


def _step(drawn=3):
    top = (TokenAlt(2, " Paris", 0.5, 0.6), TokenAlt(3, " Lyon", 0.3, 0.4), TokenAlt(7, " Nice", 0.1, 0.0))
    return Step(index=0, position=5, token_id=drawn, token=" Lyon", piece=" Lyon", p_raw=0.3, p_final=0.4, rank=2,
                entropy_raw=1.0, entropy_final=0.7, kl_final_raw=0.1, top=top)


def test_a_typed_guess_means_the_likelier_spelling():
    step = _step()
    assert guess_token(Engine(), "Paris", step=step) == 2  # " Paris" is in the top-N, "Paris" is not
    assert guess_token(Engine(), " Lyon", step=step) == 3
    assert guess_token(Engine(), "   ") is None


def test_reveal_from_the_top_n_and_the_points():
    eng, step = Engine(), _step()
    kw = dict(logits=None, settings=SamplerSettings(), prompt_tokens=(), steps=[step], index=0, engine=eng,
              piece_of=eng.piece)
    fav = score_guess("Paris", 2, step, **kw)
    assert (fav.rank_raw, fav.p_raw, fav.rank_final, fav.p_final, fav.points, fav.hit) == (1, 0.5, 1, 0.6, 2, False)
    hit = score_guess("Lyon", 3, step, **kw)
    assert hit.hit and hit.points == 3 and hit.rank_raw == 2
    cut = score_guess("Nice", 7, step, **kw)
    assert cut.rank_raw == 3 and cut.rank_final is None and cut.points == 1
    unseen = score_guess("zzz", 9, step, **kw)
    assert unseen.rank_raw is None and unseen.points == 0 and not unseen.exact
    game = GuessGame([fav, hit, cut, unseen])
    assert game.score == 6
    rows = list(csv.reader(io.StringIO(game.to_csv())))
    assert rows[0][0] == "round" and [r[-1] for r in rows[1:]] == ["2", "5", "6", "6"]


def test_csv_cells_are_not_formulas_and_the_shortlist_is_a_seeded_shuffle():
    eng, step = Engine(), _step()
    r = score_guess("=1+1", 4, step, logits=None, settings=SamplerSettings(), prompt_tokens=(), steps=[step],
                    index=0, engine=eng, piece_of=eng.piece)
    row = list(csv.reader(io.StringIO(GuessGame([r]).to_csv())))[1]
    assert row[2] == "'=1+1" and row[3] == "'=1"
    a, b = shortlist(step, 3, seed=1), shortlist(step, 3, seed=1)
    assert a == b and sorted(a) == [(2, " Paris"), (3, " Lyon"), (7, " Nice")]
