"""The prompt X-ray in the window (pytest-qt, offscreen, the real embedded model): the prompt's own
tokens shown like generated ones, their probabilities those of ``samplescope score``."""

from __future__ import annotations

import math

import numpy as np

from app.core.scoring import score_text


def test_the_prompt_xray_shows_the_prompt_scored(window, qtbot, local_backend):
    prompt = "Roses are red, violets are blue"
    window.prompt_edit.setPlainText(prompt)
    with qtbot.waitSignal(window.controller.xrayDone, timeout=120_000) as blocker:
        window.xray_action.trigger()
    result = blocker.args[0]
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
    trace = window.controller.trace
    assert [s.token_id for s in trace.steps] == local_backend.tokenize(prompt)[1:]
    assert "".join(s.token for s in trace.steps) == prompt
    assert window.token_view.rendered_count() == len(trace.steps)
    # the same numbers as the headless scorer, and the timeline's surprisal is -log p of each token
    ref = score_text(local_backend, prompt)
    assert np.allclose([s.p_raw for s in trace.steps], [math.exp(t.logprob) for t in ref.tokens[1:]], rtol=1e-6)
    x, y = window.entropy_plot.curve_data()["surprisal"]
    assert np.allclose(y, [-t.logprob for t in ref.tokens[1:]], rtol=1e-6)
    assert all(s.top and s.rank >= 1 for s in trace.steps)
    assert "perplexity" in window.statusBar().currentMessage()
    assert math.isclose(result.perplexity, ref.perplexity, rel_tol=1e-6)
