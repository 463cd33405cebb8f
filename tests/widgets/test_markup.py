"""Markup-bearing names through every widget: model and server text is shown as written, never
read as rich text or HTML (tooltips, labels, plot titles, axis labels, legends, menus, lists).

Text with HTML in it (``tests.fault_server.MARKUP``: underline, bold and an ``<img>`` of a local
file) is pushed in where users' models and servers push text in: a GGUF's ``general.name`` (the
model card, the window title, the status bar, the History), a server's model list, a concept's
name and unit (the shift lab's plot title and axis), task outcomes and series names (legends),
recent model paths (the menu). Then every widget of the window is walked: a label that holds the
markup must be plain text, no tooltip may hold it raw, and every pyqtgraph text item that holds it
must show it literally.
"""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QComboBox, QGraphicsTextItem, QLabel, QListWidget,
                               QTableWidget, QTabWidget, QTreeWidget, QWidget)

import pyqtgraph as pg
import pytest

from app.core.trace import Trace
from backends.base import SamplerSettings
from tests.fault_server import MARKUP
from tests.widgets.factory import make_step, wait_saved

RAW = "<u>mk1</u>"  # what must never reach Qt unescaped


@pytest.fixture(autouse=True)
def _every_lab_built(window):
    """The lab tabs are built when first opened (app.lab_tabs): these checks walk all of them."""
    list(window.lab_panels.values())


def _tooltips(w: QWidget):
    yield w.toolTip()
    if isinstance(w, QTabWidget):
        for i in range(w.count()):
            yield w.tabToolTip(i)
    if isinstance(w, QComboBox):
        for i in range(w.count()):
            yield w.itemData(i, Qt.ToolTipRole) or ""
    if isinstance(w, QListWidget):
        for i in range(w.count()):
            yield w.item(i).toolTip()
    if isinstance(w, QTableWidget):
        for r in range(w.rowCount()):
            for c in range(w.columnCount()):
                item = w.item(r, c)
                if item is not None:
                    yield item.toolTip()
    if isinstance(w, QTreeWidget):
        stack = [w.topLevelItem(i) for i in range(w.topLevelItemCount())]
        while stack:
            item = stack.pop()
            yield from (item.toolTip(c) for c in range(w.columnCount()))
            stack += [item.child(i) for i in range(item.childCount())]
    if isinstance(w, QAbstractItemView) and w.model() is not None and not isinstance(
            w, (QListWidget, QTableWidget, QTreeWidget)):
        m = w.model()
        for r in range(min(m.rowCount(), 500)):
            for c in range(min(m.columnCount(), 50)):
                yield m.data(m.index(r, c), Qt.ToolTipRole) or ""


def check_no_markup_read(root: QWidget) -> list[str]:
    """Every place under ``root`` (and every menu action) that would read MARKUP as markup."""
    problems: list[str] = []
    widgets = [root] + root.findChildren(QWidget)
    for w in widgets:
        name = f"{type(w).__name__}({w.objectName() or '?'})"
        if isinstance(w, QLabel) and RAW in w.text() and w.textFormat() != Qt.PlainText:
            problems.append(f"{name} shows {w.text()[:60]!r} as {w.textFormat()}")
        for tip in _tooltips(w):
            if isinstance(tip, str) and RAW in tip:
                problems.append(f"tooltip of {name} holds raw markup: {tip[:80]!r}")
        if isinstance(w, QTabWidget):
            for i in range(w.count()):
                if "&" in MARKUP and RAW in w.tabText(i):
                    problems.append(f"tab {i} of {name} holds raw markup")
        if isinstance(w, pg.PlotWidget):
            for item in w.scene().items():
                if isinstance(item, QGraphicsTextItem) and "mk1" in item.toPlainText() + item.toHtml():
                    if RAW not in item.toPlainText():
                        problems.append(f"a text item of {name} read the markup as HTML: {item.toPlainText()!r}")
    for act in root.findChildren(QAction):
        if RAW in act.toolTip():
            problems.append(f"action {act.text()!r} has a raw tooltip")
    return problems


def test_a_model_named_with_markup_is_shown_as_text(window, qtbot):
    c = window.controller
    real = c.model_info
    fake = dataclasses.replace(real, name=MARKUP)
    try:
        c.model_info = fake
        c.modelLoaded.emit(fake)
        qtbot.waitUntil(lambda: MARKUP in window.windowTitle(), timeout=5000)
        assert window.model_panel._card_labels["Name"].text() == MARKUP
        # a run of that model in the History, its tooltip names the model
        trace = Trace(prompt="p", settings=SamplerSettings(), model_name=MARKUP)
        trace.extend([make_step(0, MARKUP)])
        c.store.save_run(trace, None, MARKUP)
        window._refresh_history()
        tips = [window.history_panel.list.item(i).toolTip() for i in range(window.history_panel.list.count())]
        assert any("&lt;u&gt;mk1&lt;/u&gt;" in t for t in tips)
        # a recent model whose path holds markup
        window.app_settings.add_recent(f"/models/{MARKUP}.gguf")
        window._update_recent()
        assert check_no_markup_read(window) == []
    finally:
        c.model_info = real
        c.modelLoaded.emit(real)
        window.app_settings.remove_recent(f"/models/{MARKUP}.gguf")
        window._update_recent()


def test_plot_titles_axis_labels_and_legends_are_plain_text(window, qtbot):
    sp = window.shift_panel
    sp.distribution_plot.show_concept(MARKUP, A=1.0, I=3.0, S=2.0, values=[1, 2, 3], probs=[0.2, 0.5, 0.3],
                                      unit=MARKUP)
    item = sp.distribution_plot.item
    assert RAW in item.titleLabel.item.toPlainText()
    assert RAW in item.getAxis("bottom").label.toPlainText()
    sp.glub_plot.show_conditions({MARKUP: ([1.0, 2.0], [1.5, 2.5])})
    vp = window.vs_panel
    vp.answer_chart.set_data([MARKUP, "b"], {MARKUP: [0.5, 0.5], "model": [0.4, 0.6]})
    vp.answer_chart.set_title(MARKUP)
    assert check_no_markup_read(window) == []
    QApplication.processEvents()


def test_server_model_names_with_markup(window, fault_server):
    cp = window.connection_panel
    cp.set_models([f"{MARKUP} model"])
    assert check_no_markup_read(window) == []


def test_a_remote_run_of_markup_tokens(window, qtbot, fault_server):
    """Tokens, alternatives and the model name from a server, through the token view, the
    distribution plot, the timeline and the History."""
    from backends.sources import RemoteConfig

    c = window.controller
    cfg = RemoteConfig(base_url=fault_server.url("markup"), model=f"{MARKUP} model", read_timeout=30)
    from backends.openai_compat import OpenAICompatBackend

    remote = OpenAICompatBackend(cfg.base_url, cfg.model, read_timeout=30)
    from app.controller import _remote_info

    info = _remote_info(cfg, cfg.model)
    c._remote, c.remote_config, c.model_info = remote, cfg, info
    try:
        c.modelLoaded.emit(info)
        window.prompt_edit.setPlainText("hi")
        with qtbot.waitSignal(c.generationFinished, timeout=60_000) as blocker:
            window.generate()
        assert blocker.args[0].text.startswith(MARKUP)
        qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
        wait_saved(window, qtbot)
        window._refresh_history()
        window.select_step(0)
        assert check_no_markup_read(window) == []
        assert MARKUP in window.token_view.document_text()
        tip = window.token_view.tooltip_html(0)  # HTML built with every token escaped
        assert RAW not in tip and "&lt;u&gt;mk1&lt;/u&gt;" in tip
        dist = window.distribution_plot.tooltip_html(0)
        assert RAW not in dist
    finally:
        remote.close()
        c._remote, c.remote_config, c.remote_caps = None, None, None
        c.model_info = c._local_info
        c.modelLoaded.emit(c._local_info)
