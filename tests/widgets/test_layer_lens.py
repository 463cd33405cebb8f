"""The layer lens in the window (pytest-qt, offscreen, the real embedded model): a step's lens in the
dock (its table and heatmap), the whole run's lens in the background (heatmap, commitment strip,
a click that opens a step's lens), and a run the loaded model did not make refused with the reason."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication

from app.core.lens import lens_run
from app.core.whatif import run_prompt_tokens
from backends.base import SamplerSettings


def _generate(window, qtbot, prompt: str, n: int) -> None:
    window.prompt_edit.setPlainText(prompt)
    window.sampling_panel.set_settings(SamplerSettings(max_tokens=n, seed=11))
    with qtbot.waitSignal(window.controller.generationFinished, timeout=120_000):
        window.generate()
    qtbot.waitUntil(lambda: window.controller.state == "ready", timeout=10_000)


def test_a_steps_lens_and_the_whole_runs_lens(window, qtbot, local_backend):
    _generate(window, qtbot, "The capital of France is", 12)
    trace = window.controller.trace
    n_layers = window.controller.model_info.n_layers
    window.select_step(2)
    with qtbot.waitSignal(window.lens_jobs.ended, timeout=120_000):
        window.lens_step_action.trigger()
    view = window.step_lens_view
    lens = view.lens
    assert window.lens_dock.isVisible() and lens is not None and lens.index == 2
    assert lens.token_id == trace.steps[2].token_id and len(lens.layers) == n_layers
    # the last layer is the run's own distribution (evaluated as the run was: same batch shapes)
    assert abs(lens.layers[-1].p_chosen - trace.steps[2].p_raw) < 1e-5
    # the table: one row per layer, plain-text token cells coloured by probability
    assert view.table.rowCount() == n_layers
    top = lens.layers[-1].top[0]
    cell = view.table.item(n_layers - 1, 4)
    assert "%" in cell.text() and cell.background().color().isValid()
    assert "self-check passed" in view.note.text()
    # the same numbers as the headless lens
    prompt_tokens = run_prompt_tokens(local_backend, trace.prompt, trace.steps)
    ref = list(lens_run(local_backend, prompt_tokens, [s.token_id for s in trace.steps], indices=[2]))[0]
    assert ref.commitment_layer == lens.commitment_layer and ref.layers[-1].top[0][0] == top[0]

    # the whole run in the background, stopped after its first steps: what was made is kept
    with qtbot.waitSignal(window.lens_jobs.lensReady, timeout=120_000):
        window.lens_run_action.trigger()
    assert window.run_lens_view.progress.isVisible()
    with qtbot.waitSignal(window.lens_jobs.ended, timeout=60_000) as stopped:
        window.run_lens_view.stop_button.click()
    assert stopped.args[3] and 0 < stopped.args[2] < len(trace.steps)
    assert "stopped" in window.run_lens_view.status.text()
    # the whole run to its end: heatmap, strip, then a click on a cell opens that step
    with qtbot.waitSignal(window.lens_jobs.ended, timeout=300_000) as ended:
        window.lens_run_action.trigger()
    assert ended.args[2] == len(trace.steps) and not ended.args[3]
    rv = window.run_lens_view
    assert not rv.progress.isVisible() and rv.commitments == [window._lens_cache[i].commitment_layer
                                                              for i in range(len(trace.steps))]
    strip = window.commitment_strip
    qtbot.waitUntil(strip.isVisible, timeout=5000)
    assert strip.commitments == rv.commitments and -1 not in strip.commitments
    assert rv.image.image.shape == (len(trace.steps), n_layers)
    assert np.allclose(rv.image.image[4], window._lens_cache[4].p_chosen)
    x = int(strip.width() * (4.5 / len(trace.steps)))
    qtbot.mouseClick(strip, Qt.LeftButton, pos=QPoint(x, strip.height() // 2))
    assert view.lens.index == 4 and window.token_view.selected() == 4  # kept: no new job
    assert not window.lens_jobs.running
    # a click on the heatmap's cell of step 1
    assert rv.cell_at(1.2, n_layers - 1.2) == (1, n_layers - 1)
    rv.stepClicked.emit(1)
    assert view.lens.index == 1


def test_a_run_of_another_model_is_refused_with_the_reason(window, qtbot):
    _generate(window, qtbot, "Hello", 2)
    c = window.controller
    c.trace.model_name = "Some other model"
    try:
        window.lens_step_action.trigger()
        assert "Some other model" in window.banner_text()
        assert not window.lens_jobs.running
    finally:
        c.trace.model_name = c.model_info.name


def test_the_saved_layout_does_not_bring_an_empty_lens_back(window, qtbot):
    """A window closed with the lens showing saves its dock as visible; the next window's
    restored layout must not show an empty lens (nor squeeze the Workbench with it)."""
    window.lens_dock.close()  # its own close button
    assert not window.lens_dock.isVisible() and not window._lens_asked
    window.lens_dock.show()  # as restoreState does
    qtbot.waitUntil(lambda: not window.lens_dock.isVisible(), timeout=5000)
    window.lens_step_action.trigger()  # an action shows it, and it stays
    assert window.lens_dock.isVisible() and window._lens_asked
    QApplication.processEvents()  # the restored layout's deferred check has nothing to hide now
    assert window.lens_dock.isVisible()
    window.lens_dock.close()
