"""DistributionPlot: bar data, others row, chosen row, stages, horizontal rows, clicks, export."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt

from tests.widgets.factory import make_step
from widgets.distribution_plot import DistributionPlot, token_label


@pytest.fixture
def plot(qtbot):
    w = DistributionPlot()
    qtbot.addWidget(w)
    w.resize(640, 360)
    return w


def test_token_label():
    assert token_label(" the") == "\u2423the"
    assert token_label("\n\n") == "\u21b5\u21b5"
    assert token_label("") == "\u25af"
    assert token_label("\x00") == "\u2400"
    assert token_label("abcdefghijklmnop", 6) == "abcde\u2026"


def test_empty(plot):
    plot.show_step(None)
    d = plot.bar_data()
    assert d["labels"] == [] and d["raw"].size == 0 and d["chosen_index"] is None


def test_bar_data_with_others_and_chosen(plot):
    step = make_step(3, " cat", p_raw=0.5)  # alts 0.2, 0.1, 0.05 -> 0.15 unseen
    plot.show_step(step)
    d = plot.bar_data()
    assert d["labels"] == ["\u2423cat", "a3", "b3", "c3", "others"]
    assert d["stage"] == "final"
    np.testing.assert_allclose(d["raw"], [0.5, 0.2, 0.1, 0.05, 0.15])
    np.testing.assert_allclose(d["final"][:-1], [a.p_final for a in step.top])
    assert d["final"][-1] == pytest.approx(0.0, abs=1e-12)
    assert d["chosen_index"] == 0
    assert d["token_ids"] == [a.id for a in step.top]


def test_chosen_not_first(plot):
    step = make_step(1, "rare", p_raw=0.1, alts=[("x", 0.6), ("y", 0.2)])
    plot.show_step(step)
    d = plot.bar_data()
    assert d["labels"][d["chosen_index"]] == "rare"
    assert d["chosen_index"] == 2


def test_max_bars_moves_rest_to_others(plot):
    plot.set_max_bars(2)
    plot.show_step(make_step(0, "t", p_raw=0.5))
    d = plot.bar_data()
    assert len(d["labels"]) == 3
    assert d["raw"][-1] == pytest.approx(0.3)


def test_stage_switching(plot):
    step = make_step(0, "t", p_raw=0.5)
    plot.show_step(step)
    assert plot.stage_names() == ["final", "top_k", "temperature"]
    plot.set_stage("top_k")
    d = plot.bar_data()
    assert d["stage"] == "top_k"
    np.testing.assert_allclose(d["final"][:-1], step.stages[0].probs)
    np.testing.assert_allclose(d["raw"][:-1], [a.p_raw for a in step.top])  # raw stays
    # the stage sticks for the next step when it has the same stage
    plot.show_step(make_step(1, "u", p_raw=0.6))
    assert plot.bar_data()["stage"] == "top_k"
    # and falls back when it does not
    plot.show_step(make_step(2, "v", stages=False))
    assert plot.bar_data()["stage"] == "final"
    with pytest.raises(ValueError):
        plot.set_stage("top_k")


def test_info_label_mentions_estimate(plot):
    plot.show_step(make_step(0, "t", estimated=True, unseen_mass=0.031))
    step = make_step(0, "t", estimated=True, unseen_mass=0.031)
    assert f"entropy ≥ {step.entropy_raw:.2f} nats from top-4, 3.10% mass unseen" in plot._info.text()


def test_tooltip_escaped(plot):
    plot.show_step(make_step(0, "<b>x</b>", p_raw=0.7))
    tip = plot.tooltip_html(0)
    assert "&lt;b&gt;x&lt;/b&gt;" in tip and "<b>x</b>" not in tip
    assert "others" in plot.tooltip_html(len(plot.bar_data()["labels"]) - 1)


def test_click_handler_emits_token_id(plot, qtbot):
    step = make_step(0, "t", p_raw=0.5)
    plot.show()
    qtbot.waitExposed(plot)
    plot.show_step(step)
    for i in range(len(step.top)):
        with qtbot.waitSignal(plot.tokenClicked, timeout=1000) as blocker:
            assert plot._click_at_scene(plot.bar_scene_pos(i)) == step.top[i].id
        assert blocker.args == [step.top[i].id]
    # the others row and below the rows give nothing
    others = plot.bar_scene_pos(len(step.top))
    with qtbot.assertNotEmitted(plot.tokenClicked):
        assert plot._click_at_scene(others) is None
        below = QPointF(others.x(), others.y() + 3 * (others.y() - plot.bar_scene_pos(len(step.top) - 1).y()))
        assert plot._click_at_scene(below) is None


def test_rows_run_top_to_bottom_with_horizontal_bars(plot, qtbot):
    step = make_step(0, "t", p_raw=0.5)  # raw 0.5, 0.2, 0.1, 0.05, others 0.15
    plot.show()
    qtbot.waitExposed(plot)
    plot.show_step(step)
    n = len(plot.bar_data()["labels"])
    ys = [plot.bar_scene_pos(i).y() for i in range(n)]
    assert ys == sorted(ys) and len(set(ys)) == n  # row 0 (most likely) at the top, others last
    vb = plot.plot_widget().getPlotItem().getViewBox()
    rect = vb.sceneBoundingRect()
    assert all(rect.contains(plot.bar_scene_pos(i)) for i in range(n))
    # probability runs along x: the raw bar of row i ends at x = raw[i]; both bars sit in row i
    raw = plot._raw_bars.opts
    final = plot._final_bars.opts
    np.testing.assert_allclose(raw["width"], plot.bar_data()["raw"])
    np.testing.assert_allclose(final["width"], plot.bar_data()["final"])
    assert np.all(np.abs(np.asarray(raw["y"]) - np.arange(n)) < 0.5)
    assert np.all(np.asarray(raw["y"]) < np.asarray(final["y"]))  # raw above final in each row
    assert vb.viewRange()[0][0] == 0.0 and vb.viewRange()[0][1] > max(plot.bar_data()["raw"])


def test_axis_labels_long_tokens_and_chosen_mark(plot):
    step = make_step(0, "chosen", p_raw=0.2, alts=[(" a very long token text", 0.5), ("\n", 0.1)])
    plot.show_step(step)
    d = plot.bar_data()
    assert d["labels"][:3] == ["\u2423a\u2423very\u2423long\u2423to\u2026", "chosen", "\u21b5"]
    assert len(d["labels"][0]) == 16
    ticks = [t[1] for t in plot._token_axis._tickLevels[0]]
    assert ticks == ["\u2423a\u2423very\u2423long\u2423to\u2026", "\u25b6 chosen", "\u21b5", "others"]
    assert plot._token_axis.chosen_text == "\u25b6 chosen"
    # the axis is wide enough for the longest label
    from PySide6.QtGui import QFontMetricsF

    assert plot._token_axis.minimumWidth() >= QFontMetricsF(plot._tick_font).horizontalAdvance(ticks[0])
    # the top rows and the chosen row print their final probability
    shown = [t.toPlainText() for t in plot._pct_texts if t.isVisible()]
    assert len(shown) == 3 and all(s.endswith("%") for s in shown)


def test_click_on_token_label(plot, qtbot):
    step = make_step(0, "t", p_raw=0.5)
    plot.show()
    qtbot.waitExposed(plot)
    plot.show_step(step)
    axis_rect = plot._token_axis.sceneBoundingRect()
    pos = QPointF(axis_rect.center().x(), plot.bar_scene_pos(3).y())
    with qtbot.waitSignal(plot.tokenClicked, timeout=1000) as blocker:
        assert plot._click_at_scene(pos) == step.top[3].id
    assert blocker.args == [step.top[3].id]
    assert "id" in plot.tooltip_html(plot._index_at_scene(pos))


def test_wheel_and_drag_do_not_move_the_view(plot, qtbot):
    plot.show()
    qtbot.waitExposed(plot)
    plot.show_step(make_step(0, "t", p_raw=0.5))
    pw = plot.plot_widget()
    vb = pw.getPlotItem().getViewBox()
    before = vb.viewRange()
    centre = pw.mapFromScene(plot.bar_scene_pos(1))
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    for delta in (480, -960):
        ev = QWheelEvent(QPointF(centre), QPointF(pw.viewport().mapToGlobal(centre)), QPoint(0, 0),
                         QPoint(0, delta), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                         Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(pw.viewport(), ev)
    qtbot.mousePress(pw.viewport(), Qt.MouseButton.LeftButton, pos=centre)
    qtbot.mouseMove(pw.viewport(), centre + QPoint(60, 40))
    qtbot.mouseRelease(pw.viewport(), Qt.MouseButton.LeftButton, pos=centre + QPoint(60, 40))
    np.testing.assert_allclose(vb.viewRange(), before)


def test_mouse_click_on_bar(plot, qtbot):
    step = make_step(0, "t", p_raw=0.5)
    plot.show()
    qtbot.waitExposed(plot)
    plot.show_step(step)
    plot.set_pick_mode(True)
    pw = plot.plot_widget()
    pos = pw.mapFromScene(plot.bar_scene_pos(2))
    with qtbot.waitSignal(plot.tokenClicked, timeout=1000) as blocker:
        qtbot.mouseClick(pw.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == [step.top[2].id]
    assert plot.pick_mode()


@pytest.mark.parametrize("ext", ["png", "svg"])
def test_export(plot, qtbot, tmp_path, ext):
    plot.show()
    qtbot.waitExposed(plot)
    plot.show_step(make_step(0, "<b>", p_raw=0.5))
    path = tmp_path / f"dist.{ext}"
    plot.export(path)
    assert path.stat().st_size > 500
    if ext == "svg":
        svg = path.read_text(encoding="utf-8")
        assert "<svg" in svg
        assert svg.count("<path") >= 10  # vector bars (5 raw + 5 final), not an embedded bitmap
    with pytest.raises(ValueError):
        plot.export(tmp_path / "dist.txt")


def test_tooltip_event_over_bar(plot, qtbot):
    from PySide6.QtCore import QEvent
    from PySide6.QtGui import QHelpEvent
    from PySide6.QtWidgets import QApplication, QToolTip

    plot.show()
    qtbot.waitExposed(plot)
    plot.show_step(make_step(0, "<b>", p_raw=0.5))
    pw = plot.plot_widget()
    point = pw.mapFromScene(plot.bar_scene_pos(0))
    event = QHelpEvent(QEvent.Type.ToolTip, point, pw.viewport().mapToGlobal(point))
    QApplication.sendEvent(pw.viewport(), event)
    qtbot.waitUntil(QToolTip.isVisible, timeout=2000)
    assert "&lt;b&gt;" in QToolTip.text() and "chosen" in QToolTip.text()
    QToolTip.hideText()
