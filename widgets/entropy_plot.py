"""Entropy and surprisal over the steps of a run.

Owns: ``EntropyPlot`` (a pyqtgraph plot of three curves drawn from a ``Trace``'s numpy columns
and a vertical line marking the selected step). Runs on the GUI thread only.

The curves are created once; ``refresh()`` (called by the controller's ~30 Hz timer) hands the
trace's column views to ``setData`` only when the trace grew, never once per appended token.
Long runs stay fast with clip-to-view and peak downsampling. A reveal limit
(``set_reveal_limit``, presentation mode's pace) draws only the first steps of the trace.
"""

from __future__ import annotations

import html
import math
import os
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import QVBoxLayout, QWidget

import pyqtgraph as pg

from widgets.distribution_plot import FINAL_COLOR, RAW_COLOR, export_plot_item
from widgets.plain_plot import plain_plot_widget

if TYPE_CHECKING:  # pragma: no cover
    from app.core.trace import Trace

__all__ = ["EntropyPlot", "CURVES"]

#: (key, legend name, colour, symbol) of each curve; the key names the Trace column.
CURVES: tuple[tuple[str, str, tuple[int, int, int], str], ...] = (
    ("entropy_raw", "raw entropy", RAW_COLOR, "o"),
    ("entropy_final", "final entropy", FINAL_COLOR, "o"),
    ("surprisal", "surprisal of chosen", (0, 158, 115), "t"),
)

#: Above this many points the symbols are hidden (lines alone read better and draw much faster:
#: symbols on ~1000 points cost ~15 ms per redraw on this machine).
SYMBOL_LIMIT = 400


class EntropyPlot(QWidget):
    """Raw entropy, final entropy and the chosen token's surprisal (all in nats) per step.

    Clicking a point, or anywhere in the plot area, emits ``stepClicked`` with the nearest step.
    """

    #: The step index nearest to where the user clicked.
    stepClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._trace: Trace | None = None
        self._n_drawn = -1
        self._selected: int | None = None
        self._x = np.zeros(0)
        self._estimated_seen = 0
        self._estimated = False
        self._symbols_on = True
        self._title: str | None = None
        self._limit: int | None = None  # draw at most this many steps (None: all)
        self._projector = False  # thicker curves, the legend in the axis label (set_projector_style)

        self._plot = plain_plot_widget(self, background=None)
        pi = self._plot.getPlotItem()
        pi.setLabel("left", "nats")
        pi.setLabel("bottom", "step")
        pi.setClipToView(True)
        pi.setDownsampling(auto=True, mode="peak")
        pi.addLegend(offset=(10, 4), brush=(128, 128, 128, 40), colCount=3)
        pi.getViewBox().setLimits(xMin=-1)
        pi.getViewBox().setDefaultPadding(0.1)  # headroom so the one-row legend rarely hides data
        self._curves: dict[str, pg.PlotDataItem] = {}
        for key, name, color, symbol in CURVES:
            item = pi.plot(
                np.zeros(0),
                np.zeros(0),
                name=name,
                pen=pg.mkPen(color, width=1),
                symbol=symbol,
                symbolSize=5,
                symbolBrush=color,
                symbolPen=None,
                connect="finite",
            )
            self._curves[key] = item
        # "Apply to this run": the run re-scored under other settings, over the run's own curves
        # (in the legend only while shown)
        self._overlay: dict[str, pg.PlotDataItem] = {}
        self._overlay_names = {"entropy_final": "re-scored final entropy", "surprisal": "re-scored -ln p_final",
                               "cut": "cut by the new settings"}
        for key, color in (("entropy_final", FINAL_COLOR), ("surprisal", (0, 158, 115))):
            item = pi.plot(np.zeros(0), np.zeros(0),
                           pen=pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine), connect="finite")
            item.setVisible(False)
            self._overlay[key] = item
        self._cut_marks = pi.plot(np.zeros(0), np.zeros(0), pen=None, symbol="x",
                                  symbolSize=11, symbolBrush=(204, 0, 0), symbolPen=pg.mkPen((204, 0, 0), width=2))
        self._cut_marks.setVisible(False)
        self._legend_has_overlay = False
        self._line = pg.InfiniteLine(
            pos=0, angle=90, movable=False, pen=pg.mkPen((204, 0, 102), width=1.5, style=Qt.PenStyle.DashLine)
        )
        self._line.setZValue(20)
        self._line.setVisible(False)
        pi.addItem(self._line, ignoreBounds=True)

        self._plot.scene().sigMouseClicked.connect(self._on_scene_clicked)
        self._follow = False  # the view grows with a streaming run (see _follow_range)
        self._span = (0.0, 0.0)
        self._y_max = 0.0
        pi.getViewBox().sigRangeChangedManually.connect(self._on_user_range)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._plot)

    # ------------------------------------------------------------------ public API

    def set_trace(self, trace: Trace | None) -> None:
        """Plot ``trace`` (None clears) and draw it at once (a re-scored overlay goes)."""
        self._trace = trace
        self.set_overlay(None)
        self._n_drawn = -1
        self._estimated_seen = 0
        self._estimated = False
        self._selected = None
        self._line.setVisible(False)
        self._follow = False
        self._span = (0.0, 0.0)
        self._y_max = 0.0
        self.refresh()
        self._plot.getPlotItem().enableAutoRange()

    def trace(self) -> Trace | None:
        return self._trace

    def set_overlay(self, entropy_final: np.ndarray | None, p_final: np.ndarray | None = None,
                    cut: np.ndarray | None = None) -> None:
        """Overlay a re-scored run (``app.core.whatif.Rescored``): its final entropy and the
        chosen tokens' -ln p_final under the new settings as dashed lines, an x at every step whose token
        the new settings cut (at the height of the run's own surprisal). None clears."""
        legend = self._plot.getPlotItem().legend
        items = {**self._overlay, "cut": self._cut_marks}
        if entropy_final is None:
            for item in items.values():
                item.setData(np.zeros(0), np.zeros(0))
                item.setVisible(False)
            if self._legend_has_overlay and legend is not None:
                for item in items.values():
                    legend.removeItem(item)
                self._legend_has_overlay = False
                self._place_legend()
            return
        if not self._legend_has_overlay and legend is not None:
            for key, item in items.items():
                legend.addItem(item, self._overlay_names[key])
            self._legend_has_overlay = True
            self._place_legend()
        n = entropy_final.shape[0]
        x = np.arange(n, dtype=np.float64)
        with np.errstate(divide="ignore"):
            surprisal = -np.log(np.asarray(p_final, dtype=np.float64))
        surprisal[~np.isfinite(surprisal)] = np.nan  # a cut token has no surprisal: marked instead
        self._overlay["entropy_final"].setData(x, np.asarray(entropy_final, dtype=np.float64))
        self._overlay["surprisal"].setData(x, surprisal)
        for item in self._overlay.values():
            item.setVisible(True)
        cut = np.zeros(n, dtype=bool) if cut is None else np.asarray(cut, dtype=bool)
        own = self._trace.surprisal.view()[:n] if self._trace is not None else np.zeros(n)
        self._cut_marks.setData(x[cut], np.asarray(own, dtype=np.float64)[cut])
        self._cut_marks.setVisible(bool(cut.any()))

    def overlay_data(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The overlay's curves and the cut marks as drawn (empty arrays when none)."""
        out = {}
        for key, item in (*self._overlay.items(), ("cut", self._cut_marks)):
            x = item.xData if item.xData is not None and item.isVisible() else np.zeros(0)
            y = item.yData if item.yData is not None and item.isVisible() else np.zeros(0)
            out[key] = (np.asarray(x), np.asarray(y))
        return out

    def refresh(self, live: bool = False) -> None:
        """Hand the trace's columns to the curves if the trace changed length since last time.

        ``live`` (tokens are streaming): lines only. A symbol per point is the plot's most costly
        part (pyqtgraph rebuilds every spot on each update: about half the plot's redraw time),
        and while a run streams that time is taken from llama.cpp's threads; the symbols come
        back when the run ends (up to ``SYMBOL_LIMIT`` points)."""
        trace = self._trace
        n = len(trace) if trace is not None else 0
        if self._limit is not None:
            n = min(n, self._limit)
        show_symbols = n <= SYMBOL_LIMIT and not live
        if n == self._n_drawn and show_symbols == self._symbols_on:
            return
        if self._x.size < n:
            self._x = np.arange(max(n, 2 * self._x.size, 256), dtype=np.float64)
        x = self._x[:n]
        for key, _name, color, symbol in CURVES:
            item = self._curves[key]
            y = getattr(trace, key).view()[:n] if trace is not None else np.zeros(0)
            if show_symbols != self._symbols_on:
                item.setSymbol(symbol if show_symbols else None)
            item.setData(x, y)
        self._symbols_on = show_symbols
        self._follow_range(trace, n, live)
        self._n_drawn = n
        if trace is not None:
            if not self._estimated and n > self._estimated_seen:
                self._estimated = any(s.estimated for s in trace.steps[self._estimated_seen : n])
            self._estimated_seen = n
        title = "estimated from top-N (mass outside unseen)" if self._estimated else None
        if title != self._title:  # setTitle relayouts the plot: only when it changes
            self._title = title
            self._plot.getPlotItem().setTitle(title)
        if self._selected is not None and self._selected < n:
            self._line.setVisible(True)

    def _follow_range(self, trace, n: int, live: bool) -> None:
        """While a run streams (and the user has not zoomed or panned), the view grows in steps
        (half as wide again, whole nats) instead of following every token: each new range makes
        pyqtgraph lay out and draw both axes again, the plot's costliest part after the symbols.
        When the run ends the view fits the data exactly (pyqtgraph's auto-range)."""
        vb = self._plot.getPlotItem().getViewBox()
        if not live:
            if self._follow:
                self._follow = False
                vb.enableAutoRange()
            return
        if not self._follow and not all(vb.autoRangeEnabled()):
            return  # the user set the view: leave it
        if any(vb.autoRangeEnabled()):  # starting to follow, or the user pressed "auto" again
            self._follow = True
            self._span = (0.0, 0.0)
            vb.disableAutoRange()
        if trace is not None and n > max(self._n_drawn, 0):
            for key, *_rest in CURVES:
                new = getattr(trace, key).view()[max(self._n_drawn, 0):n]
                new = new[np.isfinite(new)]
                if new.size:
                    self._y_max = max(self._y_max, float(new.max()))
        x_hi, y_hi = self._span
        if n > x_hi or not x_hi:
            x_hi = float(max(16, int(n * 1.5)))
        if self._y_max * 1.25 > y_hi or not y_hi:  # headroom for the one-row legend
            y_hi = float(max(1, math.ceil(self._y_max * 1.4)))
        if (x_hi, y_hi) != self._span:
            self._span = (x_hi, y_hi)
            vb.setRange(xRange=(-1.0, x_hi), yRange=(-0.03 * y_hi, y_hi), padding=0)

    def set_reveal_limit(self, n: int | None, live: bool = False) -> None:
        """Draw only the first ``n`` steps of the trace (None: every step), at once."""
        n = None if n is None else max(0, int(n))
        if n != self._limit:
            self._limit = n
            self.refresh(live=live)

    def reveal_limit(self) -> int | None:
        return self._limit

    def set_projector_style(self, on: bool) -> None:
        """For a projector (presentation mode): curves 2.5 pixels wide (1 otherwise) with larger
        symbols, and the legend, which in large type would cover the top of the data, moved into
        the step axis's label as coloured marks (while no re-scored overlay is shown: its entries
        need the legend)."""
        self._projector = bool(on)
        width, size = (2.5, 8) if on else (1, 5)
        for key, _name, color, _symbol in CURVES:
            item = self._curves[key]
            item.setPen(pg.mkPen(color, width=width))
            item.setSymbolSize(size)
        self._place_legend()

    def _place_legend(self) -> None:
        pi = self._plot.getPlotItem()
        inline = self._projector and not self._legend_has_overlay
        if pi.legend is not None:
            pi.legend.setVisible(not inline)
        if inline:
            marks = {"o": "●", "t": "▼"}
            parts = [f'<span style="color: rgb{color}">{marks.get(symbol, "■")}</span>&nbsp;{html.escape(name)}'
                     for _key, name, color, symbol in CURVES]
            pi.setHtmlLabel("bottom", " &nbsp; ".join(parts) + " &nbsp;&nbsp; step")
        else:
            pi.setLabel("bottom", "step")

    def projector_style(self) -> bool:
        return self._projector

    def set_grid(self, on: bool) -> None:
        """Show grid lines (off by default: they cost more per redraw than the curves)."""
        self._plot.getPlotItem().showGrid(x=bool(on), y=bool(on), alpha=0.2 if on else None)

    def clear(self) -> None:
        self.set_trace(None)

    def select(self, index: int | None) -> None:
        """Mark step ``index`` with a vertical line (``None`` or a negative index hides it)."""
        if index is None or index < 0:
            self._selected = None
            self._line.setVisible(False)
            return
        self._selected = int(index)
        self._line.setValue(self._selected)
        self._line.setVisible(True)

    def selected(self) -> int | None:
        return self._selected

    def curve_data(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The full (not downsampled) data of each curve, keyed like the Trace columns."""
        out = {}
        for key, item in self._curves.items():
            x = item.xData if item.xData is not None else np.zeros(0)
            y = item.yData if item.yData is not None else np.zeros(0)
            out[key] = (np.asarray(x), np.asarray(y))
        return out

    def plot_widget(self) -> pg.PlotWidget:
        return self._plot

    def step_scene_pos(self, index: int, y: float | None = None) -> QPointF:
        """The scene position of step ``index`` at height ``y`` (default: mid view; for tests)."""
        vb = self._plot.getPlotItem().getViewBox()
        if y is None:
            (_, _), (y0, y1) = vb.viewRange()
            y = (y0 + y1) / 2
        return vb.mapViewToScene(QPointF(float(index), float(y)))

    def export(self, path: str | os.PathLike[str]) -> None:
        """Save the plot as PNG or SVG, chosen by the extension of ``path``."""
        export_plot_item(self._plot.getPlotItem(), path)

    # ------------------------------------------------------------------ internals

    def _on_user_range(self, *_args) -> None:
        self._follow = False  # the user zoomed or panned: the view is theirs until "auto"

    def _index_at_scene(self, pos: QPointF) -> int:
        vb = self._plot.getPlotItem().getViewBox()
        if self._n_drawn <= 0 or not vb.sceneBoundingRect().contains(pos):
            return -1
        x = vb.mapSceneToView(pos).x()
        return int(min(max(round(x), 0), self._n_drawn - 1))

    def _click_at_scene(self, pos: QPointF) -> int:
        """Handle a click at scene position ``pos``: emit and return the nearest step, or -1."""
        i = self._index_at_scene(pos)
        if i >= 0:
            self.select(i)
            self.stepClicked.emit(i)
        return i

    def _on_scene_clicked(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton and not ev.double():
            self._click_at_scene(ev.scenePos())
