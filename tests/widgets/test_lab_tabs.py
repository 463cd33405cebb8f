"""The lab tabs are built the first time they are needed (app.lab_tabs; issue 15, the window opens
fast): the window opens with every lab's tab titled and explained but none built; opening a tab,
or asking for its panel or presenter, builds it in place without moving the current tab; a lab
built while presenting gets the presentation's plot labels and gives them back on leaving.
These need no model: the window is made without loading one."""

from __future__ import annotations

import pyqtgraph as pg
import pytest
from PySide6.QtWidgets import QApplication

from app.lab_registry import LABS
from widgets.plain_plot import PlainPlotItem


@pytest.fixture()
def bare_window(qapp):
    from app.main import create_window

    w = create_window(autoload=False)
    w.show()
    yield w
    w.close()


def _lab_index(window, name: str) -> int:
    return 1 + [s.name for s in LABS].index(name)


def test_the_window_opens_with_every_lab_tab_named_but_none_built(bare_window):
    w = bare_window
    assert w.lab_tab_set.built() == {}
    assert w.lab_tabs.count() == 1 + len(LABS)
    for i, spec in enumerate(LABS, start=1):
        assert w.lab_tabs.tabText(i) == spec.title and w.lab_tabs.tabToolTip(i) == spec.tooltip
        assert not w.lab_tab_set.is_panel(w.lab_tabs.widget(i))
    assert set(w.lab_panels) == {s.name for s in LABS} and "vs" in w.lab_panels and "nope" not in w.lab_panels
    assert w.lab_tab_set.built() == {}  # listing and asking build nothing


def test_opening_a_tab_builds_its_lab_in_place(bare_window, qtbot):
    w = bare_window
    i = _lab_index(w, "align")
    with qtbot.waitSignal(w.lab_tabs.currentChanged, timeout=5000) as blocker:
        w.lab_tabs.setCurrentIndex(i)
    assert blocker.args == [i]
    panel, presenter = w.lab_tab_set.built()["align"]
    assert w.lab_tabs.currentIndex() == i and w.lab_tabs.currentWidget() is panel is w.align_panel
    assert presenter is w.align_lab is w.lab_presenters["align"] and presenter.panel is panel
    assert w.lab_tabs.tabText(i) == "P(token) vs P(task)" and w.lab_tabs.count() == 1 + len(LABS)
    assert w.lab_tab_set.is_panel(panel) and list(w.lab_tab_set.built()) == ["align"]


def test_asking_for_a_panel_builds_it_without_moving_the_current_tab(bare_window, qtbot):
    w = bare_window
    w.show_lab("workbench")
    changes = []
    w.lab_tabs.currentChanged.connect(changes.append)
    panel = w.decoding_panel
    assert w.lab_tabs.currentIndex() == 0 and changes == []
    assert w.lab_tabs.indexOf(panel) == _lab_index(w, "decoding")
    assert w.decoding_lab.panel is panel
    w.show_lab("decoding")
    assert w.lab_tabs.currentWidget() is panel and changes == [_lab_index(w, "decoding")]
    with pytest.raises(AttributeError):
        getattr(w, "nothing_panel")  # noqa: B009  (no such lab: a plain AttributeError)
    # a lab built late is wired as any other: its "Open in Workbench" reaches the window
    panel.openTraceRequested.emit({"no": "trace here"})
    assert "Not opened" in w.banner_text()


def test_a_lab_built_while_presenting_gets_the_presentation_plot_labels(bare_window, qtbot):
    w = bare_window
    scale = float(w.app_settings.presentation_scale)
    assert scale > 1.0
    w.set_presentation(True)
    try:
        QApplication.processEvents()
        w.show_lab("shift")
        items = [pw.getPlotItem() for pw in w.shift_panel.findChildren(pg.PlotWidget)]
        assert items and all(isinstance(it, PlainPlotItem) and it.text_scale() == scale for it in items)
    finally:
        w.set_presentation(False)
    assert all(it.text_scale() == 1.0 for it in items)
