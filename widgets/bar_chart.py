"""A grouped bar chart with text categories, for the labs' small charts.

Owns: ``BarChart`` (a ``LabPlot`` of one or more series of bars over text categories,
horizontal or vertical, with a legend, an optional reference line, a title, hover-free plain
text labels, PNG/SVG export and ``data()`` for tests). Used for "what the model says vs what
it does", the VS/Direct ratios and answer histograms against a reference. GUI thread only.

Category labels may be model output: they are drawn by the axis with ``QPainter.drawText``
(plain text, never rich text) and shortened to ``LABEL_CHARS`` characters.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PySide6.QtWidgets import QWidget

import pyqtgraph as pg

from widgets.lab_plot import LabPlot

__all__ = ["BarChart", "LABEL_CHARS", "SERIES_COLORS"]

LABEL_CHARS = 28
#: colour-blind-safe series colours (Okabe-Ito): blue, orange, bluish green, vermillion
SERIES_COLORS = ((0, 114, 178), (230, 159, 0), (0, 158, 115), (213, 94, 0))


def _short(text: str) -> str:
    flat = " ".join(str(text).split()) or "␣"
    return flat if len(flat) <= LABEL_CHARS else flat[: LABEL_CHARS - 1] + "…"


class BarChart(LabPlot):
    """Grouped bars: ``set_data(categories, {series name: values})``."""

    def __init__(self, title: str = "", *, horizontal: bool = True, value_label: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(title, **{("x_label" if horizontal else "y_label"): value_label}, parent=parent)
        self.horizontal = horizontal
        self.item.showGrid(x=horizontal, y=not horizontal, alpha=0.25)
        self.item.setMenuEnabled(True)
        self._legend = self.item.addLegend(offset=(-10, 10))
        self._bars: list[pg.BarGraphItem] = []
        self._ref_line: pg.InfiniteLine | None = None
        self._categories: list[str] = []
        self._series: dict[str, np.ndarray] = {}
        self._reference: float | None = None

    # ------------------------------------------------------------------ data
    def set_title(self, title: str) -> None:
        self.item.setTitle(title)

    def set_data(self, categories: Sequence[str], series: dict[str, Sequence[float]],
                 reference: float | None = None) -> None:
        """Draw one group of bars per category, one bar per series (NaN values are left out).
        ``reference`` draws a dashed line at that value (e.g. ratio 1 = no change)."""
        self._categories = [str(c) for c in categories]
        self._series = {name: np.asarray(list(v), dtype=np.float64) for name, v in series.items()}
        for name, values in self._series.items():
            if len(values) != len(self._categories):
                raise ValueError(f"series {name!r} has {len(values)} values for {len(self._categories)} categories")
        self._reference = reference
        self._draw()

    def clear(self) -> None:
        self.set_data([], {})

    def data(self) -> dict:
        """What is drawn: categories, each series' values, the reference line."""
        return {"categories": list(self._categories), "series": {k: v.copy() for k, v in self._series.items()},
                "reference": self._reference}

    # ------------------------------------------------------------------ drawing
    def _draw(self) -> None:
        for bar in self._bars:
            self.item.removeItem(bar)
        self._bars.clear()
        self._legend.clear()
        if self._ref_line is not None:
            self.item.removeItem(self._ref_line)
            self._ref_line = None
        n_cat, n_ser = len(self._categories), max(1, len(self._series))
        # categories from the top down when horizontal (first category first, as read)
        pos = (np.arange(n_cat)[::-1] if self.horizontal else np.arange(n_cat)).astype(np.float64)
        width = 0.8 / n_ser
        for i, (name, values) in enumerate(self._series.items()):
            ok = np.isfinite(values)
            centres = pos - 0.4 + width * (i + 0.5)
            color = SERIES_COLORS[i % len(SERIES_COLORS)]
            brush = pg.mkBrush(*color, 220)
            if self.horizontal:
                bar = pg.BarGraphItem(x0=np.zeros(ok.sum()), y=centres[ok], height=width * 0.9,
                                      width=values[ok], brush=brush, pen=pg.mkPen(None))
            else:
                bar = pg.BarGraphItem(x=centres[ok], y0=np.zeros(ok.sum()), width=width * 0.9,
                                      height=values[ok], brush=brush, pen=pg.mkPen(None))
            self.item.addItem(bar)
            self._bars.append(bar)
            if len(self._series) > 1 or name:
                self._legend.addItem(bar, name)
        ticks = [list(zip(pos.tolist(), [_short(c) for c in self._categories]))]
        cat_axis = self.item.getAxis("left" if self.horizontal else "bottom")
        cat_axis.setTicks(ticks)
        if self._reference is not None and math.isfinite(self._reference):
            self._ref_line = pg.InfiniteLine(self._reference, angle=90 if self.horizontal else 0,
                                             pen=pg.mkPen((90, 90, 90), style=pg.QtCore.Qt.DashLine))
            self.item.addItem(self._ref_line)
        if n_cat:
            span = (-0.6, n_cat - 0.4)
            if self.horizontal:
                self.item.setYRange(*span, padding=0)
                self.item.enableAutoRange(axis="x")
            else:
                self.item.setXRange(*span, padding=0)
                self.item.enableAutoRange(axis="y")
