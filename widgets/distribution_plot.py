"""The next-token distribution of one step as a bar chart: raw against final (or a stage).

Owns: ``DistributionPlot`` (a stage selector, an info line and a pyqtgraph plot of the top-N
candidates plus an "others" bar), ``token_label`` (a token's text made visible for an axis) and
``export_plot_item`` (PNG/SVG export shared with the other plots). Runs on the GUI thread only.

Token texts reach Qt only as plain text: axis tick strings (drawn with ``drawText``), labels
with ``Qt.PlainText``, and tooltips that are HTML built here with ``html.escape``.
"""

from __future__ import annotations

import html
import math
import os
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QPainter, QPicture
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QToolTip, QVBoxLayout, QWidget

import pyqtgraph as pg
from pyqtgraph import exporters

from backends.base import Step

__all__ = ["DistributionPlot", "token_label", "export_plot_item", "RAW_COLOR", "FINAL_COLOR"]

# Okabe-Ito blue and orange: distinguishable with every common colour-vision deficiency.
RAW_COLOR = (86, 180, 233)
FINAL_COLOR = (230, 159, 0)
CHOSEN_PEN = (204, 0, 102)
_BAR_W = 0.38
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


def _pct(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    if 0 < p < 0.0001:
        return "<0.01%"
    return f"{p * 100:.2f}%"


def export_plot_item(plot_item: pg.PlotItem, path: str | os.PathLike[str]) -> None:
    """Write ``plot_item`` to ``path``: SVG for ``.svg``, otherwise a raster image (PNG, JPG,
    BMP) chosen by the extension. The background is white so exports read well in documents."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".svg":
        # Not pyqtgraph's SVGExporter: in pyqtgraph 0.14 with Qt >= 6.10 it fails on the closed
        # paths ("... Z") Qt writes (pyqtgraph issues #3485, #3495) and leaves the plot half-changed.
        _export_svg_with_qt(plot_item, path)
        return
    if ext not in (".png", ".jpg", ".jpeg", ".bmp"):
        raise ValueError(f"cannot export to {ext or 'a file without extension'}: use .png or .svg")
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


class DistributionPlot(QWidget):
    """Bars for the candidates of one ``Step``: raw probability beside final probability (or
    beside the distribution after one sampler stage, picked in the combo box), the mass outside
    the top-N as an "others" bar, the chosen token outlined.

    Clicking a candidate's column emits ``tokenClicked(token_id)``; the controller decides what it
    means (in step mode: force that token). ``set_pick_mode`` only changes the hint and cursor.
    """

    #: The token id of the bar the user clicked (never the "others" bar).
    tokenClicked = Signal(int)

    def __init__(self, parent: QWidget | None = None, max_bars: int = 30) -> None:
        super().__init__(parent)
        self._step: Step | None = None
        self._max_bars = max(1, int(max_bars))
        self._stage: str = _FINAL_KEY
        self._pick_mode = False
        self._data: dict[str, Any] = self._empty_data()
        self._shown_alts: list = []

        self._info = QLabel(self)
        self._info.setTextFormat(Qt.TextFormat.PlainText)
        self._info.setWordWrap(True)
        self._info.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

        self._stage_box = QComboBox(self)
        self._stage_box.setToolTip("Compare the raw distribution with the final one or with the one after a stage")
        self._stage_box.addItem("Raw vs final", _FINAL_KEY)
        self._stage_box.currentIndexChanged.connect(self._on_stage_changed)

        self._hint = QLabel("Click a bar to choose the next token", self)
        self._hint.setTextFormat(Qt.TextFormat.PlainText)
        self._hint.setStyleSheet("color: #c06;")
        self._hint.setVisible(False)

        self._plot = pg.PlotWidget(self, background=None)
        pi = self._plot.getPlotItem()
        pi.setMenuEnabled(False)
        pi.setMouseEnabled(x=False, y=False)
        pi.hideButtons()
        pi.showGrid(x=False, y=True, alpha=0.25)
        pi.setLabel("left", "probability")
        pi.getAxis("left").enableAutoSIPrefix(False)
        pi.getAxis("bottom").setStyle(tickTextOffset=4, autoExpandTextSpace=True)
        self._legend = pi.addLegend(offset=(-10, 4), brush=(128, 128, 128, 40), colCount=2)

        self._raw_bars = pg.BarGraphItem(x=np.zeros(0), height=np.zeros(0), width=_BAR_W, brush=RAW_COLOR)
        self._final_bars = pg.BarGraphItem(x=np.zeros(0), height=np.zeros(0), width=_BAR_W, brush=FINAL_COLOR)
        pi.addItem(self._raw_bars)
        pi.addItem(self._final_bars)
        self._legend.addItem(self._raw_bars, "raw")
        self._legend.addItem(self._final_bars, "final")

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

    def show_step(self, step: Step | None) -> None:
        """Draw ``step``'s candidates (``None`` clears). Keeps the chosen stage if the new step
        has a stage of the same name, otherwise falls back to "Raw vs final"."""
        self._step = step
        box = self._stage_box
        box.blockSignals(True)
        try:
            box.clear()
            box.addItem("Raw vs final", _FINAL_KEY)
            names = [st.name for st in step.stages] if step is not None else []
            for name in names:
                box.addItem(f"after {name}", name)
            if self._stage not in names:
                self._stage = _FINAL_KEY
            box.setCurrentIndex(max(0, box.findData(self._stage)))
            box.setEnabled(bool(names))
        finally:
            box.blockSignals(False)
        self._draw()

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
        """In pick mode the plot invites the user to click a bar to choose the next token."""
        self._pick_mode = bool(on)
        self._hint.setVisible(self._pick_mode)
        cursor = Qt.CursorShape.PointingHandCursor if self._pick_mode else Qt.CursorShape.ArrowCursor
        self._plot.viewport().setCursor(cursor)

    def pick_mode(self) -> bool:
        return self._pick_mode

    def set_max_bars(self, n: int) -> None:
        """Show at most ``n`` candidates; the rest join the "others" bar."""
        self._max_bars = max(1, int(n))
        self._draw()

    def bar_data(self) -> dict[str, Any]:
        """The data currently drawn: ``labels`` (the last is "others"), ``raw`` and ``final``
        (the compared distribution: final or the selected stage) as float arrays of the same
        length, ``chosen_index`` (bar of the chosen token or None), ``stage`` ("final" or a stage
        name) and ``token_ids`` (per candidate bar, without the others bar)."""
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
        """The scene position of the middle of candidate column ``index`` (for tests)."""
        vb = self._plot.getPlotItem().getViewBox()
        top = float(max(self._data["raw"].max(initial=0.0), self._data["final"].max(initial=0.0)))
        return vb.mapViewToScene(QPointF(float(index), max(top, 0.02) / 2))

    def export(self, path: str | os.PathLike[str]) -> None:
        """Save the plot as PNG or SVG, chosen by the extension of ``path``."""
        export_plot_item(self._plot.getPlotItem(), path)

    # ------------------------------------------------------------------ internals

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
            "labels": [token_label(a.token) for a in shown] + ["others"],
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
        n = len(d["labels"])
        x = np.arange(n, dtype=np.float64)
        chosen = d["chosen_index"]
        chosen_pen = pg.mkPen(CHOSEN_PEN, width=2.5)
        plain_pen = pg.mkPen((60, 60, 60, 140), width=0.8)

        def brushes(rgb: tuple[int, int, int]) -> list:
            out = []
            for i in range(n):
                if i == n - 1:  # the others bar: hatched
                    out.append(QBrush(QColor(*rgb), Qt.BrushStyle.BDiagPattern))
                elif i == chosen:
                    out.append(pg.mkBrush(tuple(int(c * 0.8) for c in rgb)))
                else:
                    out.append(pg.mkBrush(rgb))
            return out

        # pyqtgraph 0.14 fails on empty per-bar lists: use the single pen/brush when there are no bars.
        pens = [chosen_pen if i == chosen else plain_pen for i in range(n)] if n else None
        self._raw_bars.setOpts(
            x=x - _BAR_W / 2, height=d["raw"], width=_BAR_W, pen=plain_pen, brush=RAW_COLOR,
            brushes=brushes(RAW_COLOR) if n else None, pens=pens,
        )
        self._final_bars.setOpts(
            x=x + _BAR_W / 2, height=d["final"], width=_BAR_W, pen=plain_pen, brush=FINAL_COLOR,
            brushes=brushes(FINAL_COLOR) if n else None, pens=pens,
        )
        stage_label = "final" if d["stage"] == _FINAL_KEY else f"after {d['stage']}"
        self._legend.getLabel(self._final_bars).setText(stage_label)
        axis = pi.getAxis("bottom")
        axis.setTicks([[(float(i), lab) for i, lab in enumerate(d["labels"])]])
        if n:
            top = float(max(d["raw"].max(), d["final"].max()))
            pi.setYRange(0.0, max(0.05, top * 1.22), padding=0)  # headroom for the legend
            pi.setXRange(-0.6, n - 0.4, padding=0)
        else:
            pi.setYRange(0.0, 1.0, padding=0)
            pi.setXRange(-0.6, 0.6, padding=0)
        self._info.setText(self._info_text())

    def _info_text(self) -> str:
        step = self._step
        if step is None:
            return "No step selected"
        tok = repr(step.token) if step.token else f"part of a character {step.piece!r}"
        text = (
            f"Step {step.index}: {tok}  ·  p_raw {_pct(step.p_raw)}  ·  p_final {_pct(step.p_final)}"
            f"  ·  rank {step.rank}  ·  entropy {step.entropy_raw:.3f} → {step.entropy_final:.3f} nats"
        )
        if step.forced:
            text += "  ·  forced"
        if self._data["chosen_index"] is None and step.top:
            text += "  ·  chosen token not among the bars"
        if self._stage != _FINAL_KEY:
            st = next((s for s in step.stages if s.name == self._stage), None)
            if st is not None:
                text += f"\n{st.name}: kept {st.kept}, removed {_pct(st.removed_mass)} of the mass ({_pct(st.removed_raw)} raw)"
        if step.estimated:
            text += f"\nestimated from top-{len(step.top)}, {_pct(step.unseen_mass)} mass unseen"
        return text

    def _index_at_scene(self, pos: QPointF) -> int:
        """The candidate column under scene position ``pos``: 0..N-1, N for others, or -1."""
        vb = self._plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(pos):
            return -1
        pt = vb.mapSceneToView(pos)
        i = int(round(pt.x()))
        if abs(pt.x() - i) > 0.45 or not 0 <= i < len(self._data["labels"]):
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
        """Hover text for bar ``index`` (HTML built here, model strings escaped)."""
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
