"""Presentation mode in the real window on the embedded model (issue 15; pytest-qt, offscreen):
F11 and View > Presentation, nothing cut off at 1280x720, fonts and plot labels scaled by the
setting, the high-contrast theme, the pace's display queue (one token per click; a slow rate),
and leaving the mode flushing the queue and restoring everything as it was."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QApplication,
    QMainWindow,
    QSizePolicy,
    QWidget,
)

import pyqtgraph as pg

from app.display_pace import ONE_PER_CLICK
from backends.base import SamplerSettings
from tests.widgets.factory import wait_saved
from widgets.palettes import HIGH_CONTRAST_PALETTE, contrast_ratio
from widgets.plain_plot import PlainPlotItem
from widgets.presentation_theme import TEXT_ROLE_PAIRS, high_contrast_palette

W, H = 1280, 720


@pytest.fixture(autouse=True)
def leave_presentation(window):
    yield
    window.set_presentation(False)
    window.app_settings.presentation_scale = 1.5


def _generate(window, qtbot, max_tokens=8, prompt="Once upon a time"):
    window.sampling_panel.set_settings(SamplerSettings(max_tokens=max_tokens, seed=5))
    window.prompt_edit.setPlainText(prompt)
    with qtbot.waitSignal(window.controller.generationFinished, timeout=120_000) as blocker:
        window.generate_action.trigger()
    wait_saved(window, qtbot)
    return blocker.args[0]


def _present_at_projector_size(window, qtbot):
    window.set_presentation(True)
    window.resize(W, H)
    qtbot.waitUntil(lambda: window.size().width() == W and window.size().height() == H, timeout=10_000)
    QApplication.processEvents()


def _activate(window, qtbot):
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)


# ---------------------------------------------------------------------- the switch


def test_f11_and_the_view_menu_action_toggle_it(window, qtbot):
    act = window.presentation_action
    assert act.isCheckable() and act.shortcut().toString() == "F11"
    view_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&View")
    assert act in view_menu.actions()
    _activate(window, qtbot)
    qtbot.keyClick(window, Qt.Key.Key_F11)
    assert window.presenting() and act.isChecked()
    assert window.pace_bar.isVisible()
    assert not any(d.isVisible() for d in window._docks())
    qtbot.keyClick(window, Qt.Key.Key_F11)
    assert not window.presenting() and not act.isChecked()
    assert not window.pace_bar.isVisible()
    act.trigger()
    assert window.presenting()
    act.trigger()
    assert not window.presenting()


# ---------------------------------------------------------------------- nothing cut off


def _inside_scroll_area(w: QWidget, top: QWidget) -> bool:
    p = w.parentWidget()
    while p is not None and p is not top:
        if isinstance(p, QAbstractScrollArea):
            return True
        p = p.parentWidget()
    return False


def _shrinks(policy: QSizePolicy.Policy) -> bool:
    return bool(policy.value & QSizePolicy.PolicyFlag.ShrinkFlag.value)


def _needed(w: QWidget) -> tuple[int, int]:
    """The size below which ``w`` is cut off: its minimum size hint where it may shrink, else its
    size hint; an explicit minimum size wins (as a layout decides)."""
    hint, low, pol = w.sizeHint(), w.minimumSizeHint(), w.sizePolicy()
    need_w = low.width() if _shrinks(pol.horizontalPolicy()) else hint.width()
    need_h = low.height() if _shrinks(pol.verticalPolicy()) else hint.height()
    if w.minimumWidth() > 0:
        need_w = w.minimumWidth()
    if w.minimumHeight() > 0:
        need_h = w.minimumHeight()
    if w.hasHeightForWidth() and w.layout() is None:  # a word-wrapped label: its lines at this width
        need_h = max(need_h, w.heightForWidth(w.width()))
    return max(0, need_w), max(0, need_h)


def _cut_off(window: QMainWindow) -> list[str]:
    """Every visible widget of the window's central area, pace bar and status bar that is smaller
    than it needs (widgets inside a scroll area may be: they scroll)."""
    bad = []
    roots = [window.centralWidget(), window.statusBar(), window.menuBar()]
    for root in roots:
        for w in [root, *root.findChildren(QWidget)]:
            if not w.isVisible() or w.isWindow() or _inside_scroll_area(w, window):
                continue
            if w.sizePolicy().horizontalPolicy() == QSizePolicy.Policy.Ignored:
                continue
            need_w, need_h = _needed(w)
            if w.width() < need_w or w.height() < need_h:
                name = w.objectName() or type(w).__name__
                text = getattr(w, "text", lambda: "")()
                bad.append(f"{name} {text!r}: {w.width()}x{w.height()} < {need_w}x{need_h}")
    return bad


def _plot_texts_fit(window) -> list[str]:
    """Inside each visible plot: the view has room, and every axis label and the title lie
    within the plot and within the room their row or column gives them."""
    bad = []
    for pw in window.centralWidget().findChildren(pg.PlotWidget):
        if not pw.isVisible():
            continue
        item = pw.getPlotItem()
        scene = item.sceneBoundingRect()
        vb = item.getViewBox()
        if vb.width() < 100 or vb.height() < 80:
            bad.append(f"{type(pw.parentWidget()).__name__}: view {vb.width():.0f}x{vb.height():.0f}")
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            if not axis.isVisible() or not axis.label.isVisible():
                continue
            m = axis.label.document().documentMargin()  # the text item's empty border
            label = axis.label.mapRectToScene(axis.label.boundingRect().adjusted(m, m, -m, -m))
            if not scene.adjusted(-1, -1, 1, 1).contains(label):
                bad.append(f"{type(pw.parentWidget()).__name__}: {name} axis label outside the plot")
        title = item.titleLabel
        if title.isVisible():
            needs = title.item.boundingRect().height()
            if title.size().height() + 1 < needs * 0.9:
                bad.append(f"{type(pw.parentWidget()).__name__}: title {title.size().height():.0f} < {needs:.0f}")
    return bad


def test_nothing_is_cut_off_at_1280x720(window, qtbot):
    _generate(window, qtbot)
    _present_at_projector_size(window, qtbot)
    # the window really is 1280x720: its content asks for no more
    hint = window.minimumSizeHint()
    assert hint.width() <= W and hint.height() <= H, hint
    window.lab_tabs.setCurrentIndex(0)
    window.display_pace.flush()
    window._apply_pace()
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
    QApplication.processEvents()
    assert window.token_view.rendered_count() == len(window.controller.trace) > 0
    assert _cut_off(window) == []
    assert _plot_texts_fit(window) == []
    # the token view and the two plots get most of the height
    tv, plots = window.token_view, window.plots_split
    assert tv.height() >= 150 and plots.height() >= 220
    assert window.distribution_plot.width() >= 500 and window.entropy_plot.width() >= 500


def test_the_checker_finds_a_cut_off_widget(window, qtbot):
    """The check above can fail: a button squeezed below its size hint is reported."""
    _present_at_projector_size(window, qtbot)
    button = window.generate_button
    button.setMaximumWidth(12)  # narrower than its text
    try:
        QApplication.processEvents()
        assert any("Generate" in line for line in _cut_off(window))
    finally:
        button.setMaximumWidth(16777215)


# ---------------------------------------------------------------------- fonts and theme


def _plot_font_sizes(window) -> dict[str, float]:
    out = {}
    for pw in window.findChildren(pg.PlotWidget):
        item = pw.getPlotItem()
        owner = type(pw.parentWidget()).__name__
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            tick = axis.style["tickFont"]
            out[f"{owner}.{id(item)}.{name}.tick"] = tick.pointSizeF() if tick is not None else -1.0
            out[f"{owner}.{id(item)}.{name}.label"] = axis.label.font().pointSizeF()
        out[f"{owner}.{id(item)}.title"] = str(item.titleLabel.opts.get("size"))
        if item.legend is not None:
            out[f"{owner}.{id(item)}.legend"] = str(item.legend.opts["labelTextSize"])
    return out


@pytest.mark.parametrize("scale", [1.5, 2.0])
def test_fonts_and_plot_labels_scale_by_the_setting(window, qtbot, scale):
    window.app_settings.presentation_scale = scale
    base = QApplication.font().pointSizeF()
    entropy_axis = window.entropy_plot.plot_widget().getPlotItem().getAxis("bottom")
    label_before = entropy_axis.label.font().pointSizeF()
    dist_axis = window.distribution_plot.plot_widget().getPlotItem().getAxis("bottom")
    list(window.lab_panels.values())  # every lab tab built before entering (one built later: test_lab_tabs)
    window.set_presentation(True)
    assert QApplication.font().pointSizeF() == pytest.approx(base * scale)
    for w in (window.token_view.text_edit(), window.prompt_edit, window.generate_button, window.state_label,
              window.pace_control.value_label, window.lab_tabs.tabBar()):
        assert w.font().pointSizeF() == pytest.approx(base * scale), w
    # pyqtgraph's tick labels, axis labels, titles and legends
    assert entropy_axis.style["tickFont"].pointSizeF() == pytest.approx(base * scale)
    assert entropy_axis.label.font().pointSizeF() == pytest.approx(label_before * scale)
    assert dist_axis.style["tickFont"].pointSizeF() == pytest.approx(base * scale)  # follows its widget
    entropy_item = window.entropy_plot.plot_widget().getPlotItem()
    assert entropy_item.legend.opts["labelTextSize"] == f"{9 * scale:g}pt"
    for _sample, label in entropy_item.legend.items:  # drawn again in the new size, not only noted
        assert f"font-size:{9 * scale:g}pt" in label.item.toHtml().replace(" ", "")
    for pw in window.findChildren(pg.PlotWidget):  # the labs' plots too
        item = pw.getPlotItem()
        assert isinstance(item, PlainPlotItem) and item.text_scale() == scale
    assert window.token_view.palette_name() == HIGH_CONTRAST_PALETTE


def test_the_text_size_menu_sets_the_scale_while_presenting(window, qtbot):
    base = QApplication.font().pointSizeF()
    acts = window.presentation_scale_actions
    assert acts[1.5].isChecked() and sum(a.isChecked() for a in acts.values()) == 1
    window.set_presentation(True)
    acts[2.5].trigger()  # applied at once, from the normal sizes (not 1.5 x 2.5 on top of 1.5)
    assert window.app_settings.presentation_scale == 2.5 and acts[2.5].isChecked() and not acts[1.5].isChecked()
    assert QApplication.font().pointSizeF() == pytest.approx(base * 2.5)
    window.set_presentation(False)
    assert QApplication.font().pointSizeF() == pytest.approx(base)
    acts[1.5].trigger()
    assert window.app_settings.presentation_scale == 1.5


def test_the_plots_are_set_out_for_a_projector(window, qtbot):
    _generate(window, qtbot, max_tokens=4)
    window.set_presentation(True)
    window.display_pace.flush()
    window._apply_pace()
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
    # a few bars, their labels apart; the timeline's legend in its step axis's label, thick curves
    assert window.distribution_plot.max_bars() == 6
    assert len(window.distribution_plot.bar_data()["labels"]) <= 7
    item = window.entropy_plot.plot_widget().getPlotItem()
    assert not item.legend.isVisible()
    label = item.getAxis("bottom").labelText
    assert "raw entropy" in label and "surprisal of chosen" in label and label.endswith("step")
    assert window.entropy_plot._curves["entropy_raw"].opts["pen"].widthF() == 2.5
    window.set_presentation(False)
    assert window.distribution_plot.max_bars() == 30
    assert item.legend.isVisible() and item.getAxis("bottom").labelText == "step"
    assert window.entropy_plot._curves["entropy_raw"].opts["pen"].widthF() == 1


def test_the_theme_is_high_contrast(window):
    window.set_presentation(True)
    pal = QApplication.palette()
    for group in (QPalette.ColorGroup.Active, QPalette.ColorGroup.Disabled):
        for text, background in TEXT_ROLE_PAIRS:
            fg, bg = pal.color(group, text), pal.color(group, background)
            ratio = contrast_ratio((fg.red(), fg.green(), fg.blue()), (bg.red(), bg.green(), bg.blue()))
            assert ratio >= 7.0, (group, text, background, ratio)
    assert pal.color(QPalette.ColorRole.Window) == high_contrast_palette().color(QPalette.ColorRole.Window)
    axis = window.entropy_plot.plot_widget().getPlotItem().getAxis("left")
    assert axis.textPen().color().name() == "#000000"  # pyqtgraph's default grey is 2.9:1 on white


# ---------------------------------------------------------------------- the pace


def test_one_token_per_click(window, qtbot):
    _present_at_projector_size(window, qtbot)
    window.pace_control.set_rate(ONE_PER_CLICK)
    assert window.display_pace.per_click
    fin = _generate(window, qtbot, max_tokens=8)
    trace = window.controller.trace
    n = len(trace)
    assert fin.n_tokens == n >= 6
    qtbot.waitUntil(lambda: window.display_pace.available == n, timeout=5000)  # the next redraw tick
    # every token was generated and saved; none is shown yet
    assert window.token_view.rendered_count() == 0
    assert window.display_pace.held == n
    assert window.pace_control.next_button.isEnabled()
    assert window.pace_control.waiting_label.text() == f"{n} waiting"

    def shown_is(k):
        qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
        assert window.token_view.rendered_count() == k
        assert len(window.entropy_plot.curve_data()["entropy_raw"][0]) == k
        assert window.distribution_plot.step() is trace.steps[k - 1]  # the plots follow the token shown

    qtbot.mouseClick(window.pace_control.next_button, Qt.MouseButton.LeftButton)
    shown_is(1)
    _activate(window, qtbot)
    window.token_view.text_edit().setFocus()
    qtbot.keyClick(window.token_view.text_edit(), Qt.Key.Key_Space)
    shown_is(2)
    qtbot.keyClick(window.token_view.text_edit(), Qt.Key.Key_Right)
    shown_is(3)
    # a click on the text (past the last token) shows the next one; a click on a token selects it
    viewport = window.token_view.text_edit().viewport()
    empty = QPoint(viewport.width() - 5, viewport.height() - 5)
    assert window.token_view.step_at(empty) < 0
    qtbot.mouseClick(viewport, Qt.MouseButton.LeftButton, pos=empty)
    shown_is(4)
    # typing in the prompt keeps its spaces (the shortcut does not take them)
    window.prompt_edit.setFocus()
    window.prompt_edit.setPlainText("ab")
    cur = window.prompt_edit.textCursor()
    cur.movePosition(cur.MoveOperation.End)
    window.prompt_edit.setTextCursor(cur)
    qtbot.keyClick(window.prompt_edit, Qt.Key.Key_Space)
    assert window.prompt_edit.toPlainText() == "ab " and window.token_view.rendered_count() == 4
    cur.movePosition(cur.MoveOperation.Start)
    window.prompt_edit.setTextCursor(cur)
    qtbot.keyClick(window.prompt_edit, Qt.Key.Key_Right)  # and its arrow keys move the cursor
    assert window.prompt_edit.textCursor().position() == 1 and window.token_view.rendered_count() == 4
    # leaving the mode flushes the queue: every token at once, the pace bar gone
    window.set_presentation(False)
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
    assert window.token_view.rendered_count() == n
    assert len(window.entropy_plot.curve_data()["entropy_raw"][0]) == n
    assert window.distribution_plot.step() is trace.steps[-1]
    assert not window.display_pace.active and not window.reveal_action.isEnabled()


def test_a_slow_pace_holds_tokens_and_lets_them_out(window, qtbot):
    """On the pace's own clock (held still here, so a busy machine's slow run cannot let tokens
    out): the run finishes while its tokens wait, and each 2 s of that clock lets one out."""
    now = [1000.0]
    pace = window.display_pace
    real_clock, pace._clock = pace._clock, (lambda: now[0])
    try:
        window.set_presentation(True)
        window.pace_control.set_rate(0.5)
        assert pace.rate == 0.5 and window.app_settings.presentation_pace == 0.5
        _generate(window, qtbot, max_tokens=8)
        n = len(window.controller.trace)
        qtbot.waitUntil(lambda: pace.available == n, timeout=5000)
        shown = window.token_view.rendered_count()
        assert shown <= 1 < n  # the engine did not wait for the pace: the run is done, its tokens held
        assert pace.held == n - shown
        now[0] += 2.0  # one interval at 0.5 tokens/s
        qtbot.waitUntil(lambda: window.token_view.rendered_count() == shown + 1, timeout=5000)
        window.pace_control.set_rate(30.0)

        def later_then_all_shown() -> bool:
            now[0] += 1.0  # the pace's clock moves on each time it is looked at
            return window.token_view.rendered_count() == n

        qtbot.waitUntil(later_then_all_shown, timeout=20_000)
        assert pace.held == 0
    finally:
        pace._clock = real_clock


def test_stop_keeps_every_token_generated(window, qtbot):
    window.set_presentation(True)
    window.pace_control.set_rate(ONE_PER_CLICK)
    window.sampling_panel.set_settings(SamplerSettings(max_tokens=300, seed=5))
    window.prompt_edit.setPlainText("Once upon a time")
    with qtbot.waitSignal(window.controller.generationFinished, timeout=120_000) as blocker:
        window.generate_action.trigger()
        qtbot.waitUntil(lambda: len(window.controller.trace) >= 3, timeout=60_000)
        window.stop()  # Esc, between two tokens
    fin = blocker.args[0]
    wait_saved(window, qtbot)
    n = len(window.controller.trace)
    assert fin.n_tokens == n >= 3
    qtbot.waitUntil(lambda: window.display_pace.available == n, timeout=5000)
    assert window.token_view.rendered_count() == 0 and window.display_pace.held == n  # all kept, queued
    assert window.reveal_next() and window.token_view.rendered_count() == 1
    window.set_presentation(False)
    assert window.token_view.rendered_count() == n


def test_a_run_opened_from_the_history_shows_at_once(window, qtbot):
    _generate(window, qtbot, max_tokens=5)
    window.set_presentation(True)
    window.pace_control.set_rate(ONE_PER_CLICK)
    runs = window.controller.store.list_runs()
    assert runs
    window.open_run(runs[0].id)
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
    assert window.token_view.rendered_count() == len(window.controller.trace) == runs[0].n_tokens > 0


# ---------------------------------------------------------------------- leaving restores everything


def _snapshot(window) -> dict:
    app = QApplication.instance()
    pal = app.palette()
    widgets = [window, *window.findChildren(QWidget)]
    return {
        "font": app.font().toString(),
        "palette": [pal.color(g, r).name() for g in (QPalette.ColorGroup.Active, QPalette.ColorGroup.Disabled)
                    for r in QPalette.ColorRole if r not in (QPalette.ColorRole.NColorRoles,)],
        "widget_fonts": {id(w): w.font().toString() for w in widgets},
        "token_palette": window.token_view.palette_name(),
        "docks": [d.isVisible() for d in window._docks()],
        "splits": (window.workbench_split.sizes(), window.plots_split.sizes()),
        "size": (window.width(), window.height()),
        "state": bytes(window.saveState()),
        "plot_fonts": _plot_font_sizes(window),
        "plot_pens": [pw.getPlotItem().getAxis("left").textPen().color().name()
                      for pw in window.findChildren(pg.PlotWidget)],
        "pace_bar": window.pace_bar.isVisible(),
        "bars": window.distribution_plot.max_bars(),
        "timeline": (window.entropy_plot.projector_style(),
                     window.entropy_plot.plot_widget().getPlotItem().getAxis("bottom").labelText),
        "margins": [pw.getPlotItem().getContentsMargins() for pw in window.findChildren(pg.PlotWidget)],
        "settings_palette": window.app_settings.palette,
    }


def test_leaving_restores_everything_exactly(window, qtbot):
    window.resize(1500, 950)
    QApplication.processEvents()
    before = _snapshot(window)
    window.set_presentation(True)
    window.resize(W, H)
    QApplication.processEvents()
    during = _snapshot(window)
    assert during["font"] != before["font"] and during["token_palette"] != before["token_palette"]
    assert during["palette"] != before["palette"] and during["plot_fonts"] != before["plot_fonts"]
    window.set_presentation(False)
    QApplication.processEvents()
    after = _snapshot(window)
    # (widgets made meanwhile, a popup's, have fonts of their own)
    after["widget_fonts"] = {k: v for k, v in after["widget_fonts"].items() if k in before["widget_fonts"]}
    for key in before:
        assert after[key] == before[key], key
