"""Widgets and formatting every lab panel shares.

Owns: ``plain_label`` (a QLabel that never reads its text as rich text, word-wrapped),
``table_item`` (a read-only, single-line table cell), ``fmt_number`` (a figure as the labs show
it, "–" when missing) and ``RunControls`` (run buttons, a Stop button, a progress bar and a
status line; ``set_running`` switches them between idle and running). GUI thread only.
"""

from __future__ import annotations

import math
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QTableWidgetItem, QVBoxLayout, QWidget

__all__ = ["plain_label", "table_item", "fmt_number", "RunControls"]


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


def plain_label(text: str = "", *, wrap: bool = True) -> QLabel:
    """A label for text that may come from a model or a user: always plain text."""
    label = QLabel(text)
    label.setTextFormat(Qt.PlainText)
    label.setWordWrap(wrap)
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
