"""The base of the labs' pyqtgraph plots.

Owns: ``LabPlot`` — a white ``PlotWidget`` with a title, optional axis labels and grid, no SI
prefixes on the axes, titles, labels and legend names always plain text (``widgets.plain_plot``), ``data()`` (what is drawn, kept by the subclass in ``_data``, for tests)
and ``export(path)`` (PNG or SVG by the extension). GUI thread only.
"""

from __future__ import annotations

import os

from PySide6.QtWidgets import QVBoxLayout, QWidget

from widgets.distribution_plot import export_plot_item
from widgets.plain_plot import plain_plot_widget

__all__ = ["LabPlot"]


class LabPlot(QWidget):
    def __init__(self, title: str, x_label: str = "", y_label: str = "", *, grid: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._w = plain_plot_widget()
        self._w.setBackground("w")
        self.item = self._w.getPlotItem()
        self.item.setTitle(title)
        if x_label:
            self.item.setLabel("bottom", x_label)
        if y_label:
            self.item.setLabel("left", y_label)
        if grid:
            self.item.showGrid(x=True, y=True, alpha=0.25)
        for axis in ("bottom", "left"):
            self.item.getAxis(axis).enableAutoSIPrefix(False)
        self._data: dict = {}
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self._w)

    def data(self) -> dict:
        return dict(self._data)

    def export(self, path: str | os.PathLike[str]) -> None:
        """Save as PNG or SVG, chosen by the extension of ``path``."""
        export_plot_item(self.item, path)

    def _reset(self, title: str | None = None) -> None:
        """Remove every item (and set a new title) before drawing again."""
        self.item.clear()
        if title is not None:
            self.item.setTitle(title)
        self._data = {}
