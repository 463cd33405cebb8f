"""Guess the next token in the window, on the real embedded model (pytest-qt, offscreen): the
next distribution stays hidden, a typed or picked guess takes the step, and the reveal's ranks and
probabilities are those of the model's own logits at that step (computed here independently,
on another context of the same model)."""

from __future__ import annotations

import csv
import io
import math

import numpy as np

from backends.base import SamplerSettings

PROMPT = "The capital of France is"


#: the window's run and this reference evaluate the same tokens in the same batch shapes (the
#: prompt at once, then one token at a time): measured identical here; 0.01 nats leaves room for
#: other processors' rounding, and a wrong step or token is off by nats
TOL_NATS = 0.01


def _reference(local_backend, prompt: list[int], then: list[int], guess_id: int,
               top_k: int) -> tuple[int, float, float]:
    """(raw rank, raw p, p after top-k at temperature 1) of ``guess_id`` after ``prompt`` and the
    tokens ``then``, evaluated from an empty cache as the window's run was (no reused prefix)."""
    local_backend.reset()
    local_backend.prepare(prompt)
    for t in then:
        local_backend.feed(t)
    lg = np.asarray(local_backend.logits(), dtype=np.float64)
    w = np.exp(lg - lg.max())
    p = w / w.sum()
    rank = int(np.count_nonzero(lg > lg[guess_id])) + 1
    keep = np.argsort(-lg, kind="stable")[:top_k]
    p_final = float(w[guess_id] / w[keep].sum()) if guess_id in set(keep.tolist()) else 0.0
    return rank, float(p[guess_id]), p_final


def test_a_class_guesses_the_next_token(window, qtbot, local_backend, tmp_path):
    window.sampling_panel.set_settings(SamplerSettings(max_tokens=4, seed=17, temperature=1.0, top_k=40, top_p=1.0,
                                                       min_p=0.0))
    window.prompt_edit.setPlainText(PROMPT)
    window.guess_action.trigger()
    assert window.guess_dock.isVisible() and window.step_mode_action.isChecked()
    panel = window.guess_panel
    qtbot.waitUntil(lambda: window._pending is not None and panel.edit.isEnabled(), timeout=120_000)
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
    # the answer stays hidden: the chart does not show the pending distribution
    assert window.distribution_plot._step is not window._pending
    choices = [b.text() for b in panel.choice_buttons if b.isVisible()]
    assert len(choices) == 5
    pending_top = {a.token for a in sorted(window._pending.top, key=lambda a: -a.p_raw)[:5]}
    assert {c.strip("“”").replace("␣", " ") for c in choices} == pending_top

    # round 1: a typed guess (no leading space: the game finds " Paris")
    panel.edit.setText("Paris")
    panel.reveal_button.click()
    qtbot.waitUntil(lambda: len(window.guess_game.rounds) == 1, timeout=120_000)
    r = window.guess_game.rounds[0]
    paris = local_backend.tokenize(" Paris", add_special=False)[0]
    assert r.guess_id == paris and r.exact
    rank, p_raw, p_final = _reference(local_backend, local_backend.tokenize(PROMPT), [], paris, 40)
    assert r.rank_raw == rank and abs(math.log(r.p_raw) - math.log(p_raw)) < TOL_NATS
    assert abs(math.log(r.p_final) - math.log(p_final)) < TOL_NATS
    trace = window.controller.trace
    assert r.drawn_id == trace.steps[0].token_id and math.isclose(r.p_drawn, trace.steps[0].p_final)
    assert r.points == (3 if r.hit else 2 if rank == 1 else 1 if rank <= 10 else 0)
    assert "Drawn:" in panel.reveal.text() and f"Score: {r.points}" in panel.score_label.text()

    # round 2: a guess picked from the shortlist
    qtbot.waitUntil(lambda: panel.edit.isEnabled(), timeout=120_000)
    picked_id, _ = panel._choices[0]
    panel.choice_buttons[0].click()
    qtbot.waitUntil(lambda: len(window.guess_game.rounds) == 2, timeout=120_000)
    r2 = window.guess_game.rounds[1]
    assert r2.guess_id == picked_id and r2.step == 1
    rank2, p2, _ = _reference(local_backend, local_backend.tokenize(PROMPT), [trace.steps[0].token_id], picked_id, 40)
    assert r2.rank_raw == rank2 <= 5 and abs(math.log(r2.p_raw) - math.log(p2)) < TOL_NATS

    # the scores as CSV, with the running total
    path = window.export_guess_scores(str(tmp_path / "scores.csv"))
    rows = list(csv.DictReader(io.StringIO(open(path, encoding="utf-8").read())))
    assert [int(x["points"]) for x in rows] == [r.points, r2.points]
    assert int(rows[-1]["total"]) == window.guess_game.score == r.points + r2.points
    assert rows[0]["guess"] == "Paris" and rows[0]["rank_raw"] == str(rank)

    # a new game starts from the prompt with the score at 0; leaving the game shows the distribution again
    panel.new_button.click()
    assert window.guess_game.score == 0
    qtbot.waitUntil(lambda: window._pending is not None and panel.edit.isEnabled(), timeout=120_000)
    window.guess_action.trigger()
    assert not window.guess_dock.isVisible()
    window._mark_dirty()
    qtbot.waitUntil(lambda: window.distribution_plot._step is window._pending, timeout=5000)
    window.set_step_mode(False)
    # a saved window layout that shows the dock (a game left on at the last close) brings no game back
    window.guess_dock.show()
    qtbot.waitUntil(lambda: window.guess_dock.isHidden(), timeout=5000)
    assert not window.guessing
