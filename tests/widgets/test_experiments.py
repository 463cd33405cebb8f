"""Ready-made experiments in the real window on the embedded model (pytest-qt, offscreen): the
Experiments menu loads a prompt, the knobs and a view in one click, shows the explanation beside
the Workbench, runs at once, and each shipped demonstration shows its effect on Gemma 3 270M."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QPoint, Qt

from app.core.experiments_catalog import load_catalog, user_dir
from app.workbench_control import State
from tests.widgets.factory import wait_saved

RUN_TIMEOUT = 240_000  # ms: a run of up to 48 tokens on a busy 2-core machine


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(include_user=False)


def _menu_action(window, title):
    """The Experiments menu's entry ``title``, after opening the menu (which reads the folders)."""
    menu = window.experiments_menu
    menu.popup(window.mapToGlobal(QPoint(20, 20)))
    menu.hide()
    matches = [a for a in menu.actions() if a.text() == title]
    assert matches, [a.text() for a in menu.actions()]
    return matches[0]


def _finish(window, qtbot, start):
    """Start a run with ``start()`` and wait until it has finished and the experiment's view is shown
    (a run it stopped first, or an open step-mode run it ended, finishes "cancelled" before)."""
    with qtbot.waitSignal(window.controller.generationFinished, timeout=RUN_TIMEOUT,
                          check_params_cb=lambda fin: fin.reason != "cancelled") as blocker:
        start()
    qtbot.waitUntil(lambda: not window.experiment_view_pending, timeout=30_000)
    qtbot.waitUntil(lambda: window.controller.state == State.READY, timeout=30_000)
    wait_saved(window, qtbot)
    return blocker.args[0]


def _button(window, label):
    return next(b for b in window.experiment_card.variant_buttons() if b.text() == label)


def test_the_menu_lists_every_shipped_experiment_with_its_explanation(window, catalog):
    titles = [a.text() for a in window.experiments_menu.actions()]
    for exp in catalog.experiments:
        assert exp.title in titles
        act = _menu_action(window, exp.title)
        assert exp.explanation in act.toolTip()
    assert any(t.startswith("Open the experiments folder") for t in titles)
    assert window.experiment_card.isHidden()


def test_temperature_sets_prompt_knobs_and_view_and_flattens_the_first_token(window, qtbot, catalog):
    exp = catalog.get("temperature")
    fin = _finish(window, qtbot, _menu_action(window, exp.title).trigger)
    trace = window.controller.trace
    # the prompt, the knobs (through the sampling panel) and the run are the experiment's
    assert window.prompt_edit.toPlainText() == exp.prompt == trace.prompt
    assert window.sampling_panel.settings() == exp.settings == trace.settings
    assert fin.n_tokens == len(trace.steps) == exp.settings.max_tokens
    # the explanation stays beside the Workbench
    card = window.experiment_card
    assert card.isVisible() and window.lab_tabs.currentIndex() == 0
    assert card.texts()["explanation"] == exp.explanation
    assert card.texts()["title"].endswith(exp.title) and card.texts()["try"] == "Try: " + exp.try_text
    assert [b.text() for b in card.variant_buttons()] == [v.label for v in exp.variants]
    # the view it asks for: the first token selected, raw against final
    first = trace.steps[0]
    shown = window.distribution_plot.step()
    assert window._selected == 0 and (shown.index, shown.token_id) == (0, first.token_id)
    assert window.distribution_plot.stage() == "final"
    # temperature 1.5 flattens it: the top token loses probability, the entropy grows
    top = first.top[0]
    assert top.p_final < 0.6 * top.p_raw
    assert first.entropy_final > first.entropy_raw + 1.0
    # the "try": the knob moved, the selected step's chart follows at once (live what-if), sharper below 1
    window.sampling_panel.set_settings(exp.settings.replace(temperature=0.3))
    cooler = window.distribution_plot.step()
    assert cooler is not first and cooler.index == 0
    assert cooler.top[0].p_final > top.p_raw > top.p_final
    assert cooler.entropy_final < first.entropy_raw
    # a variant runs at once with its knobs
    fin = _finish(window, qtbot, _button(window, "Temperature 2").click)
    trace = window.controller.trace
    assert trace.settings.temperature == 2.0 and window.sampling_panel.settings().temperature == 2.0
    assert trace.steps[0].entropy_final > first.entropy_final
    assert _button(window, "Temperature 2").isChecked()


def test_top_p_keeps_few_tokens_when_sure_and_many_when_not(window, qtbot, catalog):
    exp = catalog.get("top_p")
    _finish(window, qtbot, _menu_action(window, exp.title).trigger)
    trace = window.controller.trace
    assert window.distribution_plot.stage() == "top_p"  # the view shows the stage's kept set
    kept = [next(st.kept for st in s.stages if st.name == "top_p") for s in trace.steps]
    assert min(kept) <= 3 and max(kept) >= 30 * min(kept), kept
    # the kept set follows the certainty: the surest step keeps fewer than the least sure one
    surest = min(trace.steps, key=lambda s: s.entropy_raw)
    unsure = max(trace.steps, key=lambda s: s.entropy_raw)
    assert kept[surest.index] < kept[unsure.index]
    assert "top_p: kept" in window.distribution_plot._info.text()
    # its variant "Top-k 10" keeps exactly 10 at every step and shows that stage
    _finish(window, qtbot, _button(window, "Top-k 10 instead").click)
    trace = window.controller.trace
    assert window.distribution_plot.stage() == "top_k"
    assert {next(st.kept for st in s.stages if st.name == "top_k") for s in trace.steps} == {10}


def _repeated_line(text: str) -> tuple[str, int]:
    """The whole line (the last, maybe cut, left out) that the text repeats most, and how often."""
    lines = [x.strip() for x in text.split("\n")[:-1] if x.strip()]
    if not lines:
        return "", 0
    best = max(set(lines), key=lines.count)
    return best, lines.count(best)


def test_repetition_penalty_breaks_the_greedy_loop(window, qtbot, catalog):
    # which line greedy decoding loops on depends on the CPU's float path ("The sea is a great
    # place to be" on one machine, "I love it," on an AVX-512 one): the test reads the loop itself
    exp = catalog.get("repetition_penalty")
    _finish(window, qtbot, _menu_action(window, exp.title).trigger)
    looped = window.controller.trace
    assert looped.settings.greedy and looped.settings.repeat_penalty == 1.0
    line, count = _repeated_line(looped.finished.text)
    assert count >= 3, looped.finished.text
    _finish(window, qtbot, _button(window, "With repetition penalty 1.3").click)
    broken = window.controller.trace
    assert broken.settings.repeat_penalty == 1.3 and broken.settings.greedy
    assert broken.finished.text.count(line) <= 1, broken.finished.text
    assert _repeated_line(broken.finished.text)[1] <= 2, broken.finished.text
    # the variant's view: step 1 selected, after the penalties stage
    shown = window.distribution_plot.step()
    assert window._selected == 1 and (shown.index, shown.token_id) == (1, broken.steps[1].token_id)
    assert window.distribution_plot.stage() == "penalties"
    sea = next(a for a in broken.steps[1].top if a.token == " sea")  # the prompt's word, pushed down
    penalised = next(st for st in broken.steps[1].stages if st.name == "penalties")
    assert sea.p_raw > 0.2 and penalised.probs[broken.steps[1].top.index(sea)] < sea.p_raw / 10


def test_greedy_always_takes_the_top_token_and_sampling_does_not(window, qtbot, catalog):
    exp = catalog.get("greedy_vs_sampling")
    _finish(window, qtbot, _menu_action(window, exp.title).trigger)
    greedy = window.controller.trace
    assert greedy.settings.greedy and {s.rank for s in greedy.steps} == {1}
    _finish(window, qtbot, _button(window, "Sample (temperature 0.8)").click)
    sampled = window.controller.trace
    assert sampled.settings.temperature == 0.8 and max(s.rank for s in sampled.steps) > 1
    assert sampled.finished.text != greedy.finished.text


def test_the_same_prompt_gives_new_seeds_and_the_same_distribution(window, qtbot, catalog):
    exp = catalog.get("different_answers")
    _finish(window, qtbot, _menu_action(window, exp.title).trigger)
    first = window.controller.trace
    assert window._selected == 0 and window.distribution_plot.step().index == 0
    _finish(window, qtbot, window.experiment_card.run_again_button.click)
    second = window.controller.trace
    assert second is not first and second.prompt == first.prompt == exp.prompt
    assert second.settings.seed != first.settings.seed  # each run draws a new seed...
    assert second.settings.replace(seed=0) == first.settings.replace(seed=0)  # ...and changes nothing else
    # ...while the model's distribution for the first token is the same
    a, b = first.steps[0], second.steps[0]
    assert [t.id for t in a.top[:5]] == [t.id for t in b.top[:5]]
    assert [t.p_raw for t in a.top[:5]] == pytest.approx([t.p_raw for t in b.top[:5]], abs=0.02)


def test_step_mode_experiment_shows_the_next_distribution_before_drawing(window, qtbot, catalog):
    exp = catalog.get("step_mode")
    with qtbot.waitSignal(window.controller.pendingChanged, timeout=RUN_TIMEOUT,
                          check_params_cb=lambda step: step is not None):
        _menu_action(window, exp.title).trigger()
    assert window.step_mode_action.isChecked() and window.controller.in_step_mode_run
    assert window.controller.trace.prompt == exp.prompt and len(window.controller.trace.steps) == 0
    qtbot.waitUntil(lambda: window.distribution_plot.step() is window._pending, timeout=10_000)
    assert "not chosen yet" in window.distribution_plot._info.text()
    # a click on a bar chooses the token: the second likeliest, on purpose
    choice = window._pending.top[1]
    with qtbot.waitSignal(window.controller.pendingChanged, timeout=RUN_TIMEOUT,
                          check_params_cb=lambda step: step is not None):
        window._on_bar_clicked(choice.id)
    assert window.controller.trace.steps[0].token_id == choice.id
    # opening another experiment ends the step-mode run (kept) and leaves step mode
    _finish(window, qtbot, _menu_action(window, catalog.get("greedy_vs_sampling").title).trigger)
    assert not window.step_mode_action.isChecked() and not window.controller.in_step_mode_run
    window.close_experiment()
    assert window.experiment_card.isHidden() and window.experiment is None


def test_an_experiment_opened_during_a_run_stops_it_first(window, qtbot, catalog):
    ends = []
    window.controller.generationFinished.connect(ends.append)
    try:
        window.sampling_panel.set_settings(window.sampling_panel.settings().replace(max_tokens=2000))
        window.prompt_edit.setPlainText("Write a very long story about a lighthouse.")
        window.generate()
        qtbot.waitUntil(lambda: window.controller.trace is not None and len(window.controller.trace.steps) >= 2,
                        timeout=RUN_TIMEOUT)
        _menu_action(window, catalog.get("greedy_vs_sampling").title).trigger()
        qtbot.waitUntil(lambda: len(ends) == 2, timeout=RUN_TIMEOUT)
    finally:
        window.controller.generationFinished.disconnect(ends.append)
    assert ends[0].reason == "cancelled"  # the run in the way, kept
    assert ends[1].n_tokens == 40 and window.controller.trace.settings.greedy
    qtbot.waitUntil(lambda: window.controller.state == State.READY, timeout=30_000)
    wait_saved(window, qtbot)


def test_a_users_experiment_appears_and_a_bad_one_is_a_line_in_the_menu(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLESCOPE_CONFIG_DIR", str(tmp_path))
    folder = user_dir()
    folder.mkdir()
    mine = {"title": "Cats <b>and</b> & dogs", "explanation": "A <i>teacher</i> wrote this. It loads.",
            "prompt": "My cat is", "sampler": {"temperature": 0.0, "max_tokens": 8}, "run": False}
    (folder / "cats.json").write_text(json.dumps(mine), encoding="utf-8")
    (folder / "broken.json").write_text('{"title": "Broken", "prompt": ', encoding="utf-8")
    act = _menu_action(window, "Cats <b>and</b> && dogs")  # "&" doubled: not a shortcut marker
    texts = [a.text() for a in window.experiments_menu.actions()]
    assert texts.index("Your experiments") < texts.index(act.text())
    bad = [a for a in window.experiments_menu.actions() if a.text().startswith("Not loaded: broken.json: ")]
    assert len(bad) == 1 and not bad[0].isEnabled() and "is not valid JSON" in bad[0].text()
    assert len([a for a in window.experiments_menu.actions() if a.isEnabled()]) >= 6 + 1 + 1  # the rest loads
    state = window.controller.state
    n_runs = len(window.controller.store.list_runs())
    act.trigger()
    # loaded, not run (run: false); the texts are plain text
    assert window.prompt_edit.toPlainText() == "My cat is"
    assert window.sampling_panel.settings().greedy and window.sampling_panel.settings().max_tokens == 8
    card = window.experiment_card
    assert card.isVisible() and card.explanation_label.textFormat() == Qt.PlainText
    assert card.texts()["explanation"] == mine["explanation"] and card.texts()["title"].endswith(mine["title"])
    assert window.controller.state == state and len(window.controller.store.list_runs()) == n_runs
    # a file added while the app runs appears the next time the menu opens
    (folder / "more.json").write_text(json.dumps({**mine, "title": "More cats"}), encoding="utf-8")
    assert _menu_action(window, "More cats")
    window.close_experiment()
