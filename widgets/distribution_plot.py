"""The next-token distribution of one step as a horizontal bar chart: raw against final (or a stage).

Owns: ``DistributionPlot`` (a stage selector, an info line and a pyqtgraph plot with one row per
top-N candidate, most likely at the top, plus an "others" row), ``token_label`` (a token's text
made visible for an axis) and ``export_plot_item`` (PNG/SVG export shared with the other plots).
Runs on the GUI thread only.

Token texts reach Qt only as plain text: axis tick strings (drawn with ``drawText``), labels
with ``Qt.PlainText``, and tooltips that are HTML built here with ``html.escape``.

Over 500 lines on purpose: one plot whose stages, bars, marks and hover share one set of
pyqtgraph items created once.
"""

from __future__ import annotations

import html
import math
import os
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPalette, QPicture
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QToolTip, QVBoxLayout, QWidget

import pyqtgraph as pg
from pyqtgraph import exporters

from app.core.paths import atomic_path
from backends.base import Step
from widgets.formatting import pct as _pct
from widgets.steady_label import SteadyLabel
from widgets.plain_plot import plain_plot_widget

__all__ = ["DistributionPlot", "token_label", "export_plot_item", "RAW_COLOR", "FINAL_COLOR"]

# Okabe-Ito blue and orange: distinguishable with every common colour-vision deficiency.
RAW_COLOR = (86, 180, 233)
FINAL_COLOR = (230, 159, 0)
CHOSEN_PEN = (204, 0, 102)
_BAR_H = 0.36  # thickness of one bar; a row (1.0) holds the raw bar above the final bar
_BAR_GAP = 0.01  # half the gap between the two bars of a row
_LABEL_LEN = 16  # characters of a token shown on the axis before "…"
_CHOSEN_MARK = "\u25b6 "  # "▶ ": token labels escape spaces as '␣', so no token label starts with this
_MIN_ROWS = 8  # fewer rows than this are drawn at this pitch, not stretched into slabs
_PCT_ROWS = 3  # the top rows whose final probability is printed at the end of the bars
_FINAL_KEY = "final"


def token_label(text: str, max_len: int = 10) -> str:
    """A token's text made visible on one short line: '␣' for space, '↵' for newline,
    '→' for tab, control characters as their Unicode pictures, '▯' for an empty token."""
    if text == "":
        return "\u25af"
    out = []
    for ch in text:
        if ch == " ":
            out.append("\u2423")
        elif ch == "\n":
            out.append("\u21b5")
        elif ch == "\t":
            out.append("\u2192")
        elif ch == "\r":
            out.append("\u240d")
        elif ord(ch) < 0x20:
            out.append(chr(0x2400 + ord(ch)))
        elif ch in "\u2028\u2029\x7f":
            out.append("\u2424" if ch != "\x7f" else "\u2421")
        else:
            out.append(ch)
    s = "".join(out)
    return s if len(s) <= max_len else s[: max_len - 1] + "\u2026"


#: The bar scales (the largest probability shown): the smallest one that holds the top bar.
_X_LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def _pct_short(p: float) -> str:
    """A percentage short enough to print beside a bar."""
    if p >= 0.001:
        return f"{p * 100:.1f}%"
    return "<0.1%"


def export_plot_item(plot_item: pg.PlotItem, path: str | os.PathLike[str]) -> None:
    """Write ``plot_item`` to ``path``: SVG for ``.svg``, otherwise a raster image (PNG, JPG,
    BMP) chosen by the extension. The background is white so exports read well in documents."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".svg", ".png", ".jpg", ".jpeg", ".bmp"):
        raise ValueError(f"cannot export to {ext or 'a file without extension'}: use .png or .svg")
    with atomic_path(path) as tmp:  # a failed export leaves an existing file as it was
        _export_to(plot_item, tmp, ext)


def _export_to(plot_item: pg.PlotItem, path: str, ext: str) -> None:
    if ext == ".svg":
        # Not pyqtgraph's SVGExporter: in pyqtgraph 0.14 with Qt >= 6.10 it fails on the closed
        # paths ("... Z") Qt writes (pyqtgraph issues #3485, #3495) and leaves the plot half-changed.
        _export_svg_with_qt(plot_item, path)
        return
    exporter = exporters.ImageExporter(plot_item)
    params = exporter.parameters()
    width = int(max(640, plot_item.sceneBoundingRect().width()))
    params["width"] = width  # an int: some pyqtgraph versions choke on the float default
    params["background"] = QColor(255, 255, 255)
    exporter.export(path)


def _export_svg_with_qt(plot_item: pg.PlotItem, path: str) -> None:
    """Vector export of ``plot_item`` by painting its part of the scene into a QSvgGenerator."""
    from PySide6.QtSvg import QSvgGenerator

    source = plot_item.sceneBoundingRect()
    target = QRectF(0, 0, source.width(), source.height())
    generator = QSvgGenerator()
    generator.setFileName(path)
    generator.setSize(target.size().toSize())
    generator.setViewBox(target)
    generator.setTitle("Samplescope plot")
    # pyqtgraph caches items as QPictures, replayed scaled by (device dpi / picture dpi): match them.
    generator.setResolution(QPicture().logicalDpiX())
    painter = QPainter(generator)
    try:
        painter.fillRect(target, QColor(255, 255, 255))
        plot_item.scene().render(painter, target, source)
    finally:
        painter.end()


class _TokenAxis(pg.AxisItem):
    """The left axis listing the tokens; the chosen token's label is drawn bold in ``CHOSEN_PEN``."""

    def __init__(self) -> None:
        super().__init__("left")
        self.chosen_text: str | None = None

    def drawPicture(self, p, axisSpec, tickSpecs, textSpecs):  # noqa: N802,N803 (pyqtgraph names)
        chosen = [t for t in textSpecs if t[2] == self.chosen_text]
        rest = [t for t in textSpecs if t[2] != self.chosen_text]
        super().drawPicture(p, axisSpec, tickSpecs, rest)
        if not chosen:
            return
        font = QFont(self.style["tickFont"] or p.font())
        font.setBold(True)
        p.setFont(font)
        p.setPen(pg.mkPen(CHOSEN_PEN))
        fm = QFontMetricsF(font)
        for rect, flags, text in chosen:
            # measured in the regular font: widen to the left (the text is right-aligned)
            w = max(rect.width(), fm.horizontalAdvance(text) + 2)
            p.drawText(QRectF(rect.right() - w, rect.top(), w, rect.height()), int(flags), text)


class _PercentAxis(pg.AxisItem):
    """The probability axis with its values as percentages."""

    def tickStrings(self, values, scale, spacing):  # noqa: N802 (pyqtgraph name)
        step = spacing * scale * 100
        decimals = 0 if step >= 1 else min(3, int(math.ceil(-math.log10(step))))
        return [f"{v * scale * 100:.{decimals}f}%" for v in values]


def stage_value_text(st) -> str:
    """What a stage decided at a step (``StageInfo.value``), in words: Mirostat's running mu,
    adaptive-p's adapted target, the dynamic temperature used, XTC's draw."""
    v = st.value
    if st.name in ("mirostat", "mirostat_v2"):
        return f"mu {v:.3f} bits"
    if st.name == "adaptive_p":
        return f"adaptive-p target {v:.3f}"
    if st.name == "temperature":
        return f"temperature used {v:.3f}"
    if st.name == "xtc":
        return f"XTC draw {v:.3f}"
    return f"{st.name} {v:.3g}"


class DistributionPlot(QWidget):
    """Horizontal bars for the candidates of one ``Step``, one row per token (most likely at the
    top): raw probability above final probability (or the distribution after one sampler stage,
    picked in the combo box), the mass outside the top-N as a last "others" row, the chosen
    token's row outlined and its label marked "▶" in bold.

    Clicking a candidate's row (its bars or its label) emits ``tokenClicked(token_id)``; the
    controller decides what it means (in step mode: force that token). ``set_pick_mode`` only
    changes the hint and cursor.
    """

    #: The token id of the row the user clicked (never the "others" row).
    tokenClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None, max_bars: int = 30) -> None:
        super().__init__(parent)
        self._step: Step | None = None
        self._max_bars = max(1, int(max_bars))
        self._stage: str = _FINAL_KEY
        self._pick_mode = False
        self._data: dict[str, Any] = self._empty_data()
        self._shown_alts: list = []
        self._label_width = 0.0  # grows while a run goes on, so the bars do not jump sideways
        self._labels: list[str] = []  # the axis labels as drawn (the chosen one marked)
        self._legend = ""  # the bottom axis label as set

        self._info = SteadyLabel(parent=self)  # changes with every step: it must not re-lay out the window
        self._info.setWordWrap(True)
        self._info.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

        self._stage_box = QComboBox(self)
        self._stage_box.setToolTip("Compare the raw distribution with the final one or with the one after a stage")
        self._stage_box.addItem("Raw vs final", _FINAL_KEY)
        self._stage_box.currentIndexChanged.connect(self._on_stage_changed)

        self._hint = QLabel("Click a row to choose the next token", self)
        self._hint.setTextFormat(Qt.TextFormat.PlainText)
        self._hint.setStyleSheet("color: #c06;")
        self._hint.setVisible(False)

        self._token_axis = _TokenAxis()
        self._pct_axis = _PercentAxis("bottom")
        self._plot = plain_plot_widget(
            self, background=None, axisItems={"left": self._token_axis, "bottom": self._pct_axis}
        )
        pi = self._plot.getPlotItem()
        pi.setMenuEnabled(False)
        pi.hideButtons()
        vb = pi.getViewBox()
        # A fixed view: no panning, zooming or wheel scrolling into emptiness.
        pi.setMouseEnabled(x=False, y=False)
        vb.setMenuEnabled(False)
        vb.invertY(True)  # row 0 (the most likely token) at the top
        pi.showGrid(x=True, y=False, alpha=0.25)
        self._base_font = QFont(self.font())
        self._tick_font = QFont(self._base_font)  # the token labels: smaller when rows get thin
        self._text_color = self.palette().color(QPalette.ColorRole.WindowText)  # readable, theme-aware
        self._apply_text_color()
        self._token_axis.setStyle(tickLength=0, tickTextOffset=6, tickFont=self._tick_font)
        self._pct_axis.setStyle(tickTextOffset=3, tickFont=self._base_font, maxTickLevel=0)  # major grid only
        self._pct_axis.enableAutoSIPrefix(False)
        # its axes follow the widget's font and palette (changeEvent): PlainPlotItem leaves them
        pi.owner_axes = True

        self._band = pg.BarGraphItem(x0=[0.0], y=[0.0], width=[1.0], height=[1.0],
                                     pen=pg.mkPen(None), brush=(*CHOSEN_PEN, 30))
        self._band.setZValue(-10)
        self._band.setVisible(False)
        self._raw_bars = pg.BarGraphItem(x0=np.zeros(0), y=np.zeros(0), width=np.zeros(0), height=_BAR_H, brush=RAW_COLOR)
        self._final_bars = pg.BarGraphItem(x0=np.zeros(0), y=np.zeros(0), width=np.zeros(0), height=_BAR_H, brush=FINAL_COLOR)
        pi.addItem(self._band, ignoreBounds=True)
        pi.addItem(self._raw_bars)
        pi.addItem(self._final_bars)
        self._pct_texts: list[pg.TextItem] = []
        vb.sigResized.connect(self._fit_font)

        self._plot.scene().sigMouseClicked.connect(self._on_scene_clicked)
        self._plot.viewport().installEventFilter(self)

        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        controls.addWidget(self._stage_box)
        controls.addStretch(1)
        controls.addWidget(self._hint)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(controls)
        layout.addWidget(self._info)
        layout.addWidget(self._plot, 1)
        self._draw()

    # ------------------------------------------------------------------ public API

    def show_step(self, step: Step | None, *, pending: bool = False, note: str = "") -> None:
        """Draw ``step``'s candidates (``None`` clears). Keeps the chosen stage if the new step
        has a stage of the same name, otherwise falls back to "Raw vs final". ``pending``: the
        distribution of the next token in step mode, not chosen yet (its marked token is only
        the most likely one). ``note``: a line shown above the step's figures (a what-if says
        so there)."""
        self._note = note
        self._step = step
        self._pending = pending and step is not None
        if step is None:
            self._label_width = 0.0
        box = self._stage_box
        box.blockSignals(True)
        try:
            names = [st.name for st in step.stages] if step is not None else []
            if [box.itemData(i) for i in range(1, box.count())] != names:  # refilled only when they change
                box.clear()
                box.addItem("Raw vs final", _FINAL_KEY)
                for name in names:
                    box.addItem(f"after {name}", name)
            if self._stage not in names:
                self._stage = _FINAL_KEY
            box.setCurrentIndex(max(0, box.findData(self._stage)))
            box.setEnabled(bool(names))
        finally:
            box.blockSignals(False)
        self._draw()

    def set_stage_note(self, note: str) -> None:
        """Why the stage selector is unavailable (e.g. a remote server samples by itself);
        an empty note restores the default tooltip."""
        self._stage_box.setToolTip(note or "Show the distribution after each stage of the sampler chain")
        self._stage_note = note

    def step(self) -> Step | None:
        return self._step

    def refresh(self) -> None:
        """Redraw the current step (``show_step`` already draws; this is for symmetry)."""
        self._draw()

    def set_stage(self, name: str) -> None:
        """Compare raw with ``"final"`` or with the stage called ``name`` (ValueError if the
        current step has no such stage)."""
        idx = self._stage_box.findData(name)
        if idx < 0:
            raise ValueError(f"no stage {name!r} in the current step")
        self._stage_box.setCurrentIndex(idx)  # -> _on_stage_changed -> _draw

    def stage(self) -> str:
        return self._stage

    def stage_names(self) -> list[str]:
        return [self._stage_box.itemData(i) for i in range(self._stage_box.count())]

    def set_pick_mode(self, on: bool) -> None:
        """In pick mode the plot invites the user to click a row to choose the next token."""
        self._pick_mode = bool(on)
        self._hint.setVisible(self._pick_mode)
        cursor = Qt.CursorShape.PointingHandCursor if self._pick_mode else Qt.CursorShape.ArrowCursor
        self._plot.viewport().setCursor(cursor)

    def pick_mode(self) -> bool:
        return self._pick_mode

    def set_max_bars(self, n: int) -> None:
        """Show at most ``n`` candidates; the rest join the "others" row."""
        self._max_bars = max(1, int(n))
        self._draw()

    def max_bars(self) -> int:
        return self._max_bars

    def bar_data(self) -> dict[str, Any]:
        """The data currently drawn, one entry per row from the top: ``labels`` (the token texts
        as on the axis, without the chosen mark; the last is "others"), ``raw`` and ``final``
        (the compared distribution: final or the selected stage) as float arrays of the same
        length, ``chosen_index`` (row of the chosen token or None), ``stage`` ("final" or a stage
        name) and ``token_ids`` (per candidate row, without the others row)."""
        d = self._data
        return {
            "labels": list(d["labels"]),
            "raw": d["raw"].copy(),
            "final": d["final"].copy(),
            "chosen_index": d["chosen_index"],
            "stage": d["stage"],
            "token_ids": list(d["token_ids"]),
        }

    def plot_widget(self) -> pg.PlotWidget:
        return self._plot

    def bar_scene_pos(self, index: int) -> QPointF:
        """The scene position of the middle of row ``index``'s bars (for tests)."""
        vb = self._plot.getPlotItem().getViewBox()
        d = self._data
        x_max = float(vb.viewRange()[0][1])
        length = 0.0
        if 0 <= index < len(d["labels"]):
            length = float(max(d["raw"][index], d["final"][index]))
        return vb.mapViewToScene(QPointF(max(length, 0.04 * x_max) / 2, float(index)))

    def export(self, path: str | os.PathLike[str]) -> None:
        """Save the plot as PNG or SVG, chosen by the extension of ``path``."""
        export_plot_item(self._plot.getPlotItem(), path)

    # ------------------------------------------------------------------ internals

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 (Qt name)
        """The application's font or palette changed (presentation mode): the axes' fonts follow
        the widget's font, the axes' and labels' colour its text colour."""
        kind = event.type()
        if kind == QEvent.Type.FontChange:
            self._base_font = QFont(self.font())
            self._tick_font = QFont(self._base_font)
            self._token_axis.setStyle(tickFont=self._tick_font)
            self._pct_axis.setStyle(tickFont=self._base_font)
            for item in self._pct_texts:
                item.setFont(self._pct_font())
            self._label_width = 0.0
            self._legend = ""  # set again (the label's font follows the plot item's scale)
            self._draw()
        elif kind == QEvent.Type.PaletteChange:
            self._text_color = self.palette().color(QPalette.ColorRole.WindowText)
            self._apply_text_color()
            self._legend = ""
            self._draw()
        super().changeEvent(event)

    def _apply_text_color(self) -> None:
        c = self._text_color
        for axis in (self._token_axis, self._pct_axis):
            axis.setTextPen(pg.mkPen(c))
            axis.setPen(pg.mkPen(c.red(), c.green(), c.blue(), 110))

    @staticmethod
    def _empty_data() -> dict[str, Any]:
        return {
            "labels": [],
            "raw": np.zeros(0),
            "final": np.zeros(0),
            "chosen_index": None,
            "stage": _FINAL_KEY,
            "token_ids": [],
        }

    def _on_stage_changed(self, index: int) -> None:
        key = self._stage_box.itemData(index)
        self._stage = key if key else _FINAL_KEY
        self._draw()

    def _compute(self) -> dict[str, Any]:
        step = self._step
        if step is None:
            return self._empty_data()
        alts = list(step.top)
        stage = None
        if self._stage != _FINAL_KEY:
            stage = next((st for st in step.stages if st.name == self._stage), None)
        raw_all = np.array([a.p_raw for a in alts], dtype=np.float64)
        if stage is not None:
            cmp_all = np.zeros(len(alts))
            probs = np.asarray(stage.probs, dtype=np.float64)[: len(alts)]
            cmp_all[: probs.size] = probs
        else:
            cmp_all = np.array([a.p_final for a in alts], dtype=np.float64)
        n = min(len(alts), self._max_bars)
        shown = alts[:n]
        raw = np.append(raw_all[:n], max(0.0, 1.0 - float(raw_all[:n].sum())))
        cmp = np.append(cmp_all[:n], max(0.0, 1.0 - float(cmp_all[:n].sum())))
        chosen = None
        for i, a in enumerate(shown):
            if step.token_id is not None and a.id is not None:
                if a.id == step.token_id:
                    chosen = i
                    break
            elif step.token and a.token == step.token:
                chosen = i
                break
        self._shown_alts = shown
        return {
            "labels": [token_label(a.token, _LABEL_LEN) for a in shown] + ["others"],
            "raw": raw,
            "final": cmp,
            "chosen_index": chosen,
            "stage": stage.name if stage is not None else _FINAL_KEY,
            "token_ids": [a.id for a in shown],
        }

    def _draw(self) -> None:
        self._shown_alts = []
        d = self._data = self._compute()
        pi = self._plot.getPlotItem()
        vb = pi.getViewBox()
        n = len(d["labels"])
        rows = np.arange(n, dtype=np.float64)
        chosen = d["chosen_index"]
        chosen_pen = pg.mkPen(CHOSEN_PEN, width=2)
        plain_pen = pg.mkPen((60, 60, 60, 140), width=0.8)

        def brushes(rgb: tuple[int, int, int]) -> list:
            out = []
            for i in range(n):
                if i == n - 1:  # the others row: hatched
                    out.append(QBrush(QColor(*rgb), Qt.BrushStyle.BDiagPattern))
                elif i == chosen:
                    out.append(pg.mkBrush(tuple(int(c * 0.8) for c in rgb)))
                else:
                    out.append(pg.mkBrush(rgb))
            return out

        # pyqtgraph 0.14 fails on empty per-bar lists: use the single pen/brush when there are no bars.
        pens = [chosen_pen if i == chosen else plain_pen for i in range(n)] if n else None
        offset = _BAR_H / 2 + _BAR_GAP
        self._raw_bars.setOpts(
            x0=np.zeros(n), y=rows - offset, width=d["raw"], height=_BAR_H, pen=plain_pen,
            brush=RAW_COLOR, brushes=brushes(RAW_COLOR) if n else None, pens=pens,
        )
        self._final_bars.setOpts(
            x0=np.zeros(n), y=rows + offset, width=d["final"], height=_BAR_H, pen=plain_pen,
            brush=FINAL_COLOR, brushes=brushes(FINAL_COLOR) if n else None, pens=pens,
        )

        top = float(max(d["raw"].max(), d["final"].max())) if n else 1.0
        # headroom for the printed percentages; a few fixed scales, so the percent axis is not
        # laid out and drawn again for every step while a run streams
        x_max = next((level for level in _X_LEVELS if top <= level), 1.0) * 1.22
        y_max = max(n, _MIN_ROWS) - 0.5
        vb.setLimits(xMin=0.0, xMax=x_max, yMin=-0.5, yMax=y_max)
        pi.setXRange(0.0, x_max, padding=0)
        pi.setYRange(-0.5, y_max, padding=0)

        self._band.setVisible(chosen is not None)
        if chosen is not None:
            self._band.setOpts(x0=[0.0], y=[float(chosen)], width=[x_max], height=[1.0])

        labels = list(d["labels"])
        if chosen is not None:
            labels[chosen] = _CHOSEN_MARK + labels[chosen]
        self._token_axis.chosen_text = labels[chosen] if chosen is not None else None
        self._token_axis.setTicks([[(float(i), lab) for i, lab in enumerate(labels)]])
        self._labels = labels
        self._fit_font()
        self._fit_label_width()

        stage_label = "final" if d["stage"] == _FINAL_KEY else f"after {d['stage']}"
        legend = self._legend_html(stage_label)
        if legend != self._legend:  # setLabel re-lays out the axis: only when the legend changes
            self._legend = legend
            self._pct_axis.setLabel(legend, color=self._text_color.name())
        self._draw_percentages(d, chosen)
        self._info.setText(self._info_text())

    def _legend_html(self, stage_label: str) -> str:
        """The bottom axis label doubles as the legend (no legend box over the bars)."""
        def swatch(rgb: tuple[int, int, int]) -> str:
            return f'<span style="color: rgb{rgb}">\u25a0</span>'

        return (
            f"{swatch(RAW_COLOR)} raw &nbsp; {swatch(FINAL_COLOR)} {html.escape(stage_label)}"
            f" &nbsp;&nbsp; probability"
        )

    def _fit_font(self, *_args) -> None:
        """Shrink the token labels when the rows get thinner than a line of text (many rows in
        a short plot), so neighbouring labels never overlap; back to the widget font otherwise."""
        vb = self._plot.getPlotItem().getViewBox()
        rows = max(len(self._data["labels"]), _MIN_ROWS)
        height = vb.height()
        base = self._base_font
        size = base.pointSizeF()
        if height > 0 and size > 0:
            line = QFontMetricsF(base).height()
            pitch = height / rows
            if pitch < line + 1:
                size = max(size * 0.7, size * (pitch - 1) / line)  # never below ~6-7 pt
        current = self._tick_font.pointSizeF()
        if abs(size - current) < 0.05 and (size != base.pointSizeF() or current == size):
            return  # (back to the full size exactly, though: a near miss would stay for good)
        self._tick_font = QFont(base)
        self._tick_font.setPointSizeF(size)
        self._token_axis.setStyle(tickFont=self._tick_font)
        for item in self._pct_texts:
            item.setFont(self._pct_font())
        self._fit_label_width()

    def _pct_font(self) -> QFont:
        font = QFont(self._tick_font)
        font.setPointSizeF(max(6.0, font.pointSizeF() * 0.9))
        return font

    def _fit_label_width(self) -> None:
        """Give the token axis room for its widest label (the chosen one in bold); it only grows
        until the plot is cleared so the bars keep their place while a run goes on."""
        labels = self._labels
        chosen = self._token_axis.chosen_text
        fm = QFontMetricsF(self._tick_font)
        bold = QFont(self._tick_font)
        bold.setBold(True)
        fmb = QFontMetricsF(bold)
        need = fmb.horizontalAdvance(_CHOSEN_MARK + "\u2423abcdefg")  # a floor for short tokens
        for lab in labels:
            need = max(need, (fmb if lab == chosen else fm).horizontalAdvance(lab))
        self._label_width = max(self._label_width, math.ceil(need))
        self._token_axis.setWidth(int(self._label_width) + 6 + 4)  # tickTextOffset + margin

    def _draw_percentages(self, d: dict[str, Any], chosen: int | None) -> None:
        """Print the compared probability after the bars of the top rows and the chosen row."""
        pi = self._plot.getPlotItem()
        n = len(d["labels"])
        rows = [i for i in range(min(_PCT_ROWS, n - 1)) if d["final"][i] >= 0.001]
        if chosen is not None and chosen not in rows:
            rows.append(chosen)
        color = self._text_color
        while len(self._pct_texts) < len(rows):
            item = pg.TextItem("", color=color, anchor=(0, 0.5))
            item.setFont(self._pct_font())
            pi.addItem(item, ignoreBounds=True)
            self._pct_texts.append(item)
        for k, item in enumerate(self._pct_texts):
            if k >= len(rows):
                item.setVisible(False)
                continue
            i = rows[k]
            item.setText(_pct_short(float(d["final"][i])))  # plain text
            item.setColor(CHOSEN_PEN if i == chosen else color)
            item.setPos(float(max(d["raw"][i], d["final"][i])), float(i) + _BAR_H / 2 + _BAR_GAP)
            item.setVisible(True)

    def _info_text(self) -> str:
        step = self._step
        if step is None:
            return "No step selected"
        if getattr(self, "_pending", False):
            return (
                f"Next token (step {step.index}), not chosen yet  ·  most likely {step.piece!r} "
                f"{_pct(step.p_final)} after the chain  ·  entropy {step.entropy_raw:.3f} → "
                f"{step.entropy_final:.3f} nats"
            )
        tok = repr(step.token) if step.token else f"part of a character {step.piece!r}"
        if step.estimated:
            # a remote server: its own probabilities, and only the top-N of them
            if not step.top:
                return (f"Step {step.index}: {tok}  ·  the server returned no log-probabilities "
                        "(text-only run)")
            return (
                f"Step {step.index}: {tok}  ·  p {_pct(step.p_raw)} (server)  ·  rank {step.rank}\n"
                f"entropy ≥ {step.entropy_raw:.2f} nats from top-{len(step.top)}, "
                f"{_pct(step.unseen_mass)} mass unseen"
            )
        text = (
            (f"{self._note}\n" if getattr(self, "_note", "") else "") +
            f"Step {step.index}: {tok}  ·  p_raw {_pct(step.p_raw)}  ·  p_final {_pct(step.p_final)}"
            f"  ·  rank {step.rank}  ·  entropy {step.entropy_raw:.3f} → {step.entropy_final:.3f} nats"
        )
        if step.forced:
            text += "  ·  forced"
        decided = [stage_value_text(st) for st in step.stages if st.value is not None]
        if decided:
            text += "  ·  " + "  ·  ".join(decided)
        if self._data["chosen_index"] is None and step.top:
            text += "  ·  chosen token not among the bars"
        if self._stage != _FINAL_KEY:
            st = next((s for s in step.stages if s.name == self._stage), None)
            if st is not None:
                text += f"\n{st.name}: kept {st.kept}, removed {_pct(st.removed_mass)} of the mass ({_pct(st.removed_raw)} raw)"
        return text

    def _index_at_scene(self, pos: QPointF) -> int:
        """The row under scene position ``pos`` (over its bars or its label): 0..N-1, N for
        others, or -1."""
        vb = self._plot.getPlotItem().getViewBox()
        vb_rect = vb.sceneBoundingRect()
        axis_rect = self._token_axis.sceneBoundingRect()
        on_label = axis_rect.contains(pos) and vb_rect.top() <= pos.y() <= vb_rect.bottom()
        if not (vb_rect.contains(pos) or on_label):
            return -1
        pt = vb.mapSceneToView(QPointF(vb_rect.left() + 1, pos.y()) if on_label else pos)
        i = int(round(pt.y()))
        if abs(pt.y() - i) > 0.48 or not 0 <= i < len(self._data["labels"]):
            return -1
        return i

    def _click_at_scene(self, pos: QPointF) -> int | None:
        """Handle a click at scene position ``pos``; emit and return the token id, if any."""
        i = self._index_at_scene(pos)
        ids = self._data["token_ids"]
        if 0 <= i < len(ids) and ids[i] is not None:
            self.tokenClicked.emit(int(ids[i]))
            return int(ids[i])
        return None

    def _on_scene_clicked(self, ev) -> None:
        if ev.button() == Qt.MouseButton.LeftButton and not ev.double():
            self._click_at_scene(ev.scenePos())

    def tooltip_html(self, index: int) -> str:
        """Hover text for row ``index`` (HTML built here, model strings escaped)."""
        d = self._data
        if not 0 <= index < len(d["labels"]):
            return ""
        cmp_name = "final" if d["stage"] == _FINAL_KEY else f"after {html.escape(d['stage'])}"
        if index == len(d["labels"]) - 1:
            head = "<b>others</b> (mass outside the bars)"
        else:
            alt = self._shown_alts[index] if index < len(self._shown_alts) else None
            tok = repr(alt.token) if alt is not None else d["labels"][index]
            head = f'<span style="white-space:pre">{html.escape(tok)}</span>'
            if alt is not None and alt.id is not None:
                head += f" &nbsp;id {int(alt.id)}"
            if index == d["chosen_index"]:
                head += " &nbsp;<b>chosen</b>"
        return (
            f"<html><body>{head}<br>raw {_pct(float(d['raw'][index]))}"
            f" &nbsp;·&nbsp; {cmp_name} {_pct(float(d['final'][index]))}</body></html>"
        )

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        if obj is self._plot.viewport() and event.type() == QEvent.Type.ToolTip:
            scene_pos = self._plot.mapToScene(event.pos())
            i = self._index_at_scene(scene_pos)
            if i >= 0:
                QToolTip.showText(event.globalPos(), self.tooltip_html(i), self._plot.viewport())
            else:
                QToolTip.hideText()
            return True
        return super().eventFilter(obj, event)
