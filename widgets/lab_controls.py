"""Widgets and formatting every lab panel shares.

Owns: ``plain_label`` (a QLabel that never reads its text as rich text, word-wrapped),
``table_item`` (a read-only, single-line table cell), ``fmt_number`` (a figure as the labs show
it, "–" when missing) and ``RunControls`` (run buttons, a Stop button, a progress bar and a
status line; ``set_running`` switches them between idle and running) and
``offer_traces`` (a table's rows open their generations in the Workbench: double-click, or a
context menu with one "Open in Workbench" entry per generation). GUI thread only.
"""

from __future__ import annotations

import math
from typing import Any

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QLabel, QMenu, QProgressBar, QPushButton,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from widgets.formatting import menu_text

__all__ = ["plain_label", "table_item", "fmt_number", "RunControls", "offer_traces", "OPEN_IN_WORKBENCH"]

OPEN_IN_WORKBENCH = "Open in Workbench"


def offer_traces(view: QAbstractItemView, traces_of_row: Callable[[int], list[tuple[str, dict]]],
                 open_trace: Callable[[dict], None]) -> None:
    """Let ``view``'s rows open their generations in the Workbench. ``traces_of_row(row)`` gives
    ``(label, generation record)`` pairs (``app.core.export.generation_record``): a double-click
    opens the first, the context menu offers each ("Open in Workbench: <label>")."""
    view.setContextMenuPolicy(Qt.CustomContextMenu)

    def menu_at(pos) -> None:
        index = view.indexAt(pos)
        if not index.isValid():
            return
        traces = traces_of_row(index.row())
        menu = QMenu(view)
        if not traces:
            act = menu.addAction("No generation to open for this row")
            act.setEnabled(False)
        for label, record in traces:
            act = QAction(menu_text(f"{OPEN_IN_WORKBENCH}: {label}" if label else OPEN_IN_WORKBENCH), menu)
            act.triggered.connect(lambda _=False, r=record: open_trace(r))
            menu.addAction(act)
        menu.exec(view.viewport().mapToGlobal(pos))

    def double_clicked(index) -> None:
        traces = traces_of_row(index.row())
        if traces:
            open_trace(traces[0][1])

    view.customContextMenuRequested.connect(menu_at)
    view.doubleClicked.connect(double_clicked)
    tip = view.toolTip()
    view.setToolTip((tip + "\n" if tip else "") + "Double-click a row (or right-click it) to open its generation "
                    "in the Workbench: every token, the distribution per stage, the entropy.")


def fmt_number(x: Any, digits: int = 3, *, fixed_from: float | None = None) -> str:
    """A float with ``digits`` significant digits (from ``fixed_from`` up, without decimals);
    "–" for None, NaN or infinity; anything else as ``str``."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.0f}" if fixed_from is not None and abs(x) >= fixed_from else f"{x:.{digits}g}"
    return str(x)


def table_item(text: Any, editable: bool = False) -> QTableWidgetItem:
    """A table cell showing ``text`` on one line (runs of whitespace become one space); read-only
    unless ``editable``. Table items are plain text."""
    item = QTableWidgetItem(" ".join(str(text).split()))
    if not editable:
        item.setFlags(item.flags() & ~Qt.ItemIsEditable)
    return item


def plain_label(text: str = "", *, wrap: bool = True, selectable: bool = False) -> QLabel:
    """A label for text that may come from a model or a user: always plain text (``selectable``:
    the mouse can select it, to copy a path or a message)."""
    label = QLabel(text)
    label.setTextFormat(Qt.PlainText)
    label.setWordWrap(wrap)
    if selectable:
        label.setTextInteractionFlags(Qt.TextSelectableByMouse)
    return label


class RunControls(QWidget):
    """``buttons``: (text, tooltip) of each run button, in order; ``buttons_list[i]`` are they.
    ``stop_button`` stops; ``progress`` counts in ``unit``; ``status`` says what happened."""

    def __init__(self, buttons: list[tuple[str, str]], stop_tip: str, unit: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.buttons_list: list[QPushButton] = []
        row = QHBoxLayout()
        for text, tip in buttons:
            b = QPushButton(text)
            b.setToolTip(tip)
            row.addWidget(b)
            self.buttons_list.append(b)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip(stop_tip)
        self.stop_button.setEnabled(False)
        row.addWidget(self.stop_button)
        self.progress = QProgressBar()
        self.set_unit(unit)
        self.progress.setValue(0)
        self.status = plain_label()
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(row)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)

    def set_unit(self, unit: str) -> None:
        self.progress.setFormat(f"%v / %m {unit}")

    def set_running(self, running: bool, total: int = 0) -> None:
        for b in self.buttons_list:
            b.setEnabled(not running)
        self.stop_button.setEnabled(running)
        if running:
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(0)
            self.status.setText("Running…")
