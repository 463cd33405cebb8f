"""The shift lab's plots: one concept's distribution of S, the across-concept scatter, glubbing.

Owns: ``ValueDistributionPlot`` (S as a histogram of sampled answers or as the exact bars, with
A, I and the mean of S marked and labelled), ``ShiftScatterPlot`` (I - A against S - A over the
kept concepts with the fitted line and r) and ``GlubPlot`` (the sample against the shown average
for each valence, with the S = average line). Each has ``data()`` (what is drawn, for tests) and
``export(path)`` (PNG/SVG). GUI thread only; labels are plain text.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PySide6.QtWidgets import QWidget

import pyqtgraph as pg

from widgets.bar_chart import SERIES_COLORS
from widgets.lab_plot import LabPlot

__all__ = ["ValueDistributionPlot", "ShiftScatterPlot", "GlubPlot", "MARK_COLORS"]

#: colours of the A, I and mean-S markers (Okabe-Ito: vermillion, bluish green, blue)
MARK_COLORS = {"A": (213, 94, 0), "I": (0, 158, 115), "S": (0, 114, 178)}
HIST_BINS = 20


def _central_range(values: np.ndarray, probs: np.ndarray | None, marks, tail: float = 0.01):
    """The x range that holds the central 98% of the distribution and every mark: a few far
    outliers (a "1000" among answers near 10) must not squash the bars into one pixel column.
    The outliers stay drawn; the view can be zoomed out (right-click > View All)."""
    if len(values) == 0:
        pts = [m for m in marks]
        return (min(pts), max(pts)) if pts else None
    w = np.ones(len(values)) if probs is None else np.clip(probs, 0, None)
    if w.sum() <= 0:
        w = np.ones(len(values))
    order = np.argsort(values)
    v, c = values[order], np.cumsum(w[order]) / w.sum()
    lo = float(v[min(np.searchsorted(c, tail), len(v) - 1)])
    hi = float(v[min(np.searchsorted(c, 1 - tail), len(v) - 1)])
    pts = [lo, hi, *marks]
    lo, hi = min(pts), max(pts)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    return lo, hi


class ValueDistributionPlot(LabPlot):
    """S for one concept, with A, I and mean S as labelled vertical lines."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Distribution of the sample S", "value", "probability", grid=True, parent=parent)

    def show_concept(self, name: str, *, A: float | None, I: float | None, S: float | None,  # noqa: E741
                     values: Sequence[float] = (), probs: Sequence[float] | None = None,
                     unit: str = "") -> None:
        """``probs`` given: exact bars at ``values`` (renormalised over the numeric answers);
        otherwise a histogram of the sampled ``values``."""
        self._reset(f"S for: {name}")
        self.item.setLabel("bottom", unit or "value")
        v = np.asarray([float(x) for x in values], dtype=np.float64)
        if probs is not None:
            p = np.asarray(probs, dtype=np.float64)
            if p.sum() > 0:
                p = p / p.sum()
            u = np.unique(v)
            gap = float(np.min(np.diff(u))) if len(u) > 1 else 1.0
            span = float(u[-1] - u[0]) if len(u) > 1 else 1.0
            width = max(1e-9, 0.8 * gap, span / 150)  # visible even when a few values are far apart
            if len(v):
                self.item.addItem(pg.BarGraphItem(x=v, height=p, width=width, brush=pg.mkBrush(*MARK_COLORS["S"], 150)))
            self._data = {"kind": "exact", "x": v, "height": p}
            self.item.setLabel("left", "probability (over numeric answers)")
        else:
            if len(v):
                lo, hi = float(v.min()), float(v.max())
                bins = np.linspace(lo - 0.5, hi + 0.5, min(HIST_BINS, max(2, len(np.unique(v)))) + 1)
                counts, edges = np.histogram(v, bins=bins)
                share = counts / counts.sum()
                centres = (edges[:-1] + edges[1:]) / 2
                self.item.addItem(pg.BarGraphItem(x=centres, height=share, width=(edges[1] - edges[0]) * 0.9,
                                                  brush=pg.mkBrush(*MARK_COLORS["S"], 150)))
                self._data = {"kind": "sampled", "x": centres, "height": share}
            else:
                self._data = {"kind": "sampled", "x": np.zeros(0), "height": np.zeros(0)}
            self.item.setLabel("left", "share of sampled answers")
        marks = {}
        for key, value, label in (("A", A, "A (average)"), ("I", I, "I (ideal)"), ("S", S, "mean S")):
            if value is None or not math.isfinite(value):
                continue
            line = pg.InfiniteLine(value, angle=90, pen=pg.mkPen(MARK_COLORS[key], width=2),
                                   label=f"{label} = {value:.3g}",
                                   labelOpts={"position": {"A": 0.95, "I": 0.85, "S": 0.75}[key],
                                              "color": MARK_COLORS[key], "fill": (255, 255, 255, 200)})
            self.item.addItem(line)
            marks[key] = float(value)
        self._data["marks"] = marks
        self.item.autoRange()
        lo_hi = _central_range(v, None if probs is None else np.asarray(probs, dtype=np.float64), marks.values())
        if lo_hi is not None:
            self.item.setXRange(*lo_hi, padding=0.08)
        self._data["x_range"] = lo_hi


class ShiftScatterPlot(LabPlot):
    """Across concepts: I - A (x) against S - A (y), the fitted line and r."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Sample shift against the ideal's offset", "I − A", "S − A", grid=True, parent=parent)

    def show_points(self, x: Sequence[float], y: Sequence[float], labels: Sequence[str] = (),
                    slope: float | None = None, intercept: float | None = None, r: float | None = None) -> None:
        self._reset()
        xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        spots = pg.ScatterPlotItem(xs, ys, size=9, brush=pg.mkBrush(*MARK_COLORS["S"], 200), pen=pg.mkPen("w"))
        spots.setToolTip(None)
        self.item.addItem(spots)
        self.item.addItem(pg.InfiniteLine(0, angle=0, pen=pg.mkPen((150, 150, 150), style=pg.QtCore.Qt.DotLine)))
        self.item.addItem(pg.InfiniteLine(0, angle=90, pen=pg.mkPen((150, 150, 150), style=pg.QtCore.Qt.DotLine)))
        title = "Sample shift against the ideal's offset"
        line = None
        if slope is not None and intercept is not None and len(xs) >= 2 and math.isfinite(slope):
            lo, hi = float(xs.min()), float(xs.max())
            line = (slope, intercept)
            self.item.plot([lo, hi], [intercept + slope * lo, intercept + slope * hi],
                           pen=pg.mkPen(MARK_COLORS["A"], width=2))
        if r is not None and math.isfinite(r):
            title += f"   r = {r:.3f}, n = {len(xs)}"
        self.item.setTitle(title)
        self._data = {"x": xs, "y": ys, "labels": list(labels), "line": line, "r": r}
        self.item.autoRange()


class GlubPlot(LabPlot):
    """Glubbing: the model's sample S against the shown average, one series per valence."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Synthetic concepts: sample against average", "average of the shown values",
                         "model's sample S", grid=True, parent=parent)
        self.item.addLegend(offset=(10, 10))

    def show_conditions(self, series: dict[str, tuple[Sequence[float], Sequence[float]]],
                        x_label: str = "average of the shown values") -> None:
        """``series``: valence -> (x values, samples); x is the shown average (a mean sweep) or the
        ideal (an ideal sweep); the dashed line is S = x."""
        self._reset()
        self.item.setLabel("bottom", x_label)
        self.item.addLegend(offset=(10, 10))
        all_x: list[float] = []
        for i, (valence, (xs, ys)) in enumerate(series.items()):
            xs_a, ys_a = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
            order = np.argsort(xs_a)
            color = SERIES_COLORS[i % len(SERIES_COLORS)]
            self.item.plot(xs_a[order], ys_a[order], pen=pg.mkPen(color, width=2), symbol="o",
                           symbolBrush=pg.mkBrush(*color), name=valence)
            all_x += xs_a.tolist()
        if all_x:
            lo, hi = min(all_x), max(all_x)
            self.item.plot([lo, hi], [lo, hi], pen=pg.mkPen((120, 120, 120), style=pg.QtCore.Qt.DashLine),
                           name="S = x")
        self._data = {k: (np.asarray(v[0], dtype=float), np.asarray(v[1], dtype=float)) for k, v in series.items()}
        self.item.autoRange()
