"""The P_token vs P_task lab's plots: the steps-by-outcomes heatmap and the distances over steps.

Owns: ``TokenTaskHeatmap`` (P_token at every decision step as a heatmap, outcomes down, steps
across, with P_task as a reference strip on the left and the drawn outcome of each step marked)
and ``DistancePlot`` (TV, JS and KL to P_task, the step-to-step variability and the mass outside
the outcomes over the steps, run boundaries dashed). ``data()`` for tests, ``export(path)`` for
PNG/SVG. GUI thread only; labels are plain text.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PySide6.QtWidgets import QWidget

import pyqtgraph as pg

from app.labs.align.records import AlignStepRecord
from widgets.bar_chart import SERIES_COLORS
from widgets.lab_plot import LabPlot

__all__ = ["TokenTaskHeatmap", "DistancePlot"]

_STRIP_GAP = 1.5  # columns between the P_task strip and step 0


class TokenTaskHeatmap(LabPlot):
    """``show(outcomes, p_task, matrix, drawn)``: ``matrix`` is steps x outcomes (NaN rows for
    steps where no probability fell on the outcomes)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("P_token at each decision step (left strip: P_task)", "decision step", "outcome",
                         parent=parent)
        self._cmap = pg.colormap.get("viridis")
        self._image = pg.ImageItem()
        self._strip = pg.ImageItem()
        for img in (self._image, self._strip):
            img.setColorMap(self._cmap)
            img.setLevels((0.0, 1.0))
            self.item.addItem(img)
        self._marks = pg.ScatterPlotItem(symbol="o", size=7, pen=pg.mkPen("w", width=1.5), brush=pg.mkBrush(None))
        self._marks.setZValue(10)  # above the images
        self.item.addItem(self._marks)
        self._bar = pg.ColorBarItem(values=(0, 1), colorMap=self._cmap, label="probability", interactive=False)
        self._bar.setImageItem(self._image, insert_in=self.item)
        self.item.invertY(True)

    def show(self, outcomes: Sequence[str], p_task: Sequence[float], matrix: np.ndarray,
             drawn: Sequence[str | None] = ()) -> None:
        m = np.asarray(matrix, dtype=np.float64).reshape(-1, len(outcomes)) if len(outcomes) else np.zeros((0, 0))
        shown = np.nan_to_num(m, nan=0.0)
        # ImageItem is indexed [x, y]: steps across, outcomes down (no steps yet: nothing drawn,
        # pyqtgraph cannot place an empty image)
        if m.size:
            self._image.setImage(shown, levels=(0.0, 1.0), autoLevels=False)
            self._image.setRect(0, -0.5, m.shape[0], len(outcomes))
        else:
            self._image.clear()
        if len(outcomes):
            strip = np.asarray(p_task, dtype=np.float64).reshape(1, -1)
            self._strip.setImage(strip, levels=(0.0, 1.0), autoLevels=False)
            self._strip.setRect(-_STRIP_GAP - 1, -0.5, 1, len(outcomes))
        index = {o: i for i, o in enumerate(outcomes)}
        xs = [k + 0.5 for k, d in enumerate(drawn) if d in index]  # centre of step k's column
        ys = [index[d] for d in drawn if d in index]
        self._marks.setData(xs, ys)
        self.item.getAxis("left").setTicks([[(i, str(o)) for i, o in enumerate(outcomes)]])
        self.item.getAxis("bottom").setTicks(None)
        self._data = {"outcomes": list(outcomes), "p_task": np.asarray(p_task, dtype=float), "matrix": m,
                      "drawn": list(drawn)}
        self.item.setXRange(-_STRIP_GAP - 1, max(1, m.shape[0]), padding=0.02)
        self.item.setYRange(-0.5, max(1, len(outcomes)) - 0.5, padding=0.02)


class DistancePlot(LabPlot):
    """Distances to P_task over the decision steps of one or more runs (concatenated)."""

    SERIES = (("tv", "TV to P_task"), ("js", "JS to P_task"), ("kl", "KL(P_token ‖ P_task)"),
              ("tv_prev", "TV to previous step"), ("mass_outside", "mass outside the outcomes"))

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Distance to P_task over the steps", "decision step (runs one after another)",
                         grid=True, parent=parent)
        self.item.addLegend(offset=(10, 10))
        colors = list(SERIES_COLORS) + [(120, 120, 120)]
        self._curves = {}
        for i, (key, name) in enumerate(self.SERIES):
            style = pg.QtCore.Qt.DashLine if key == "mass_outside" else pg.QtCore.Qt.SolidLine
            self._curves[key] = self.item.plot([], [], pen=pg.mkPen(colors[i % len(colors)], width=2, style=style),
                                               name=name, connect="finite")
        self._lines: list[pg.InfiniteLine] = []

    def show(self, records: Sequence[AlignStepRecord]) -> None:
        """``records``: the step records in arrival order."""
        x = np.arange(len(records), dtype=np.float64)
        out = {}
        for key, _name in self.SERIES:
            values = (getattr(r, key) for r in records)
            y = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
            self._curves[key].setData(x, y, connect="finite")
            out[key] = y
        for line in self._lines:
            self.item.removeItem(line)
        self._lines = []
        for i in range(1, len(records)):
            if records[i].run != records[i - 1].run:
                line = pg.InfiniteLine(i - 0.5, angle=90, pen=pg.mkPen((160, 160, 160), style=pg.QtCore.Qt.DotLine))
                self.item.addItem(line)
                self._lines.append(line)
        out["run_starts"] = [0] + [i for i in range(1, len(records)) if records[i].run != records[i - 1].run]
        self._data = out
