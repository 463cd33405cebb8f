"""EntropyPlot: curve data follows the trace on refresh, selection line, clicks, export."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.widgets.factory import make_step, make_trace
from widgets.entropy_plot import EntropyPlot


def _wait_ranged(plot, qtbot, last_x):
    """Auto-range runs before the next paint: wait until the view covers the steps."""
    vb = plot.plot_widget().getPlotItem().getViewBox()
    qtbot.waitUntil(lambda: vb.viewRange()[0][1] >= last_x, timeout=2000)


@pytest.fixture
def plot(qtbot):
    w = EntropyPlot()
    qtbot.addWidget(w)
    w.resize(640, 300)
    return w


def test_empty(plot):
    data = plot.curve_data()
    assert set(data) == {"entropy_raw", "entropy_final", "surprisal"}
    assert all(x.size == 0 and y.size == 0 for x, y in data.values())


def test_curve_data_after_refresh(plot):
    trace = make_trace(["a", "b", "c"])
    plot.set_trace(trace)
    data = plot.curve_data()
    for key in ("entropy_raw", "entropy_final", "surprisal"):
        x, y = data[key]
        np.testing.assert_array_equal(x, [0, 1, 2])
        np.testing.assert_allclose(y, getattr(trace, key).view())
    np.testing.assert_allclose(data["surprisal"][1], [-math.log(s.p_raw) for s in trace.steps])

    for i in range(3, 10):
        trace.append(make_step(i, "x", p_raw=0.25))
    assert plot.curve_data()["entropy_raw"][0].size == 3  # not redrawn until refresh
    plot.refresh()
    x, y = plot.curve_data()["surprisal"]
    assert x.size == y.size == 10
    assert y[-1] == pytest.approx(math.log(4))


def test_nan_surprisal_is_accepted(plot):
    trace = make_trace(["a"])
    trace.append(make_step(1, "b", p_raw=0.0, forced=True))
    plot.set_trace(trace)
    y = plot.curve_data()["surprisal"][1]
    assert y.size == 2 and np.isnan(y[1])


def test_long_run_hides_symbols(plot):
    trace = make_trace([])
    plot.set_trace(trace)
    for i in range(2000):
        trace.append(make_step(i, "x", p_raw=0.2 + 0.7 * (i % 7) / 7))
    plot.refresh()
    assert plot.curve_data()["entropy_final"][1].size == 2000
    assert plot._curves["entropy_raw"].opts["symbol"] is None


def test_select(plot):
    plot.set_trace(make_trace(["a", "b", "c"]))
    plot.select(2)
    assert plot.selected() == 2
    assert plot._line.isVisible() and plot._line.value() == 2
    plot.select(None)
    assert plot.selected() is None and not plot._line.isVisible()


def test_click_emits_nearest_step(plot, qtbot):
    plot.set_trace(make_trace(["a", "b", "c", "d", "e"]))
    plot.show()
    qtbot.waitExposed(plot)
    _wait_ranged(plot, qtbot, 4)
    with qtbot.waitSignal(plot.stepClicked, timeout=1000) as blocker:
        assert plot._click_at_scene(plot.step_scene_pos(3.2)) == 3
    assert blocker.args == [3]
    assert plot.selected() == 3


def test_mouse_click(plot, qtbot):
    from PySide6.QtCore import Qt

    plot.set_trace(make_trace(["a", "b", "c", "d", "e"]))
    plot.show()
    qtbot.waitExposed(plot)
    _wait_ranged(plot, qtbot, 4)
    pw = plot.plot_widget()
    pos = pw.mapFromScene(plot.step_scene_pos(1))
    with qtbot.waitSignal(plot.stepClicked, timeout=1000) as blocker:
        qtbot.mouseClick(pw.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert blocker.args == [1]


@pytest.mark.parametrize("ext", ["png", "svg"])
def test_export(plot, qtbot, tmp_path, ext):
    plot.set_trace(make_trace(["a", "b", "c"]))
    plot.show()
    qtbot.waitExposed(plot)
    path = tmp_path / f"entropy.{ext}"
    plot.export(path)
    assert path.stat().st_size > 500


def test_streaming_draws_lines_and_grows_the_view_in_steps(plot, qtbot):
    """While a run streams: no symbols (their spots are rebuilt on every update), and the view
    grows in steps instead of following each token (each new range re-lays out both axes)."""
    plot.show()  # pyqtgraph applies an auto-range before it paints
    qtbot.waitExposed(plot)
    trace = make_trace([])
    plot.set_trace(trace)
    vb = plot.plot_widget().getPlotItem().getViewBox()
    ranges = set()
    for i in range(120):
        trace.append(make_step(i, "x", p_raw=0.2 + 0.7 * (i % 7) / 7))
        plot.refresh(live=True)
        assert plot._curves["entropy_raw"].opts["symbol"] is None
        (x0, x1), (y0, y1) = vb.viewRange()
        assert x1 >= i and y1 >= max(float(np.nanmax(getattr(trace, k).view())) for k in
                                     ("entropy_raw", "entropy_final", "surprisal"))
        ranges.add((round(x1, 6), round(y1, 6)))
    assert len(ranges) <= 8  # 120 tokens, a handful of views
    plot.refresh(live=False)  # the run ended: symbols back, the view fits the data
    assert plot._curves["entropy_raw"].opts["symbol"] == "o"
    assert all(vb.autoRangeEnabled())
    fresh = EntropyPlot()  # the same trace drawn at once: the view a streamed run must end with
    qtbot.addWidget(fresh)
    fresh.resize(640, 300)
    fresh.show()
    qtbot.waitExposed(fresh)
    fresh.set_trace(trace)
    fvb = fresh.plot_widget().getPlotItem().getViewBox()
    qtbot.waitUntil(lambda: np.allclose(vb.viewRange(), fvb.viewRange()) and fvb.viewRange()[0][1] > 119,
                    timeout=5000)


def test_streaming_leaves_a_view_the_user_set_alone(plot):
    trace = make_trace(["a", "b", "c"])
    plot.set_trace(trace)
    vb = plot.plot_widget().getPlotItem().getViewBox()
    vb.setRange(xRange=(1.0, 2.0), padding=0)  # as a zoom does (autorange off)
    vb.sigRangeChangedManually.emit(vb.state["mouseEnabled"])
    for i in range(3, 60):
        trace.append(make_step(i, "x"))
        plot.refresh(live=True)
    assert vb.viewRange()[0] == pytest.approx([1.0, 2.0])
