"""The layer lens's views: one step's layers, a whole run's layers, and the commitment strip.

Owns:
- ``StepLensView``: one step's lens (an ``app.core.lens.StepLens``): a layers x top-tokens table
  (each layer's likeliest tokens with their probabilities, the chosen token's probability, rank
  and the layer's entropy; token cells are plain text coloured by probability with
  ``widgets.palettes.colors_for``, the chosen token's cells bold, the commitment layer's row
  marked) and a heatmap of the chosen token's probability over the layers (its curve drawn on
  it, the commitment layer marked by a line).
- ``RunLensView``: a whole run's lens as it is computed: a progress bar with Stop, and a layers x
  steps heatmap of each step's chosen-token probability at each layer with every step's
  commitment layer dotted on it; a click on a cell emits ``stepClicked`` (the window opens that
  step's lens).
- ``CommitmentStrip``: one cell per step under the token view, coloured by how early the step's
  token was settled (its commitment layer's number in the cell when there is room; "–" where the
  last layer's favourite is another token); hover for the step, click to open its lens.

They only show what they are given and say what was asked (signals); the lens is computed by
``app.window_lens`` on the model worker. Model text (tokens) is plain text everywhere: table
items, ``plain_tip`` tooltips, ``PlainPlotItem`` titles, ``pg.TextItem`` (plain). GUI thread only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton,
                               QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

import pyqtgraph as pg

from widgets.formatting import plain_tip
from widgets.palettes import DEFAULT_PALETTE, colors_for, palette_lut, text_color_for
from widgets.plain_plot import plain_plot_widget

if TYPE_CHECKING:  # pragma: no cover
    from app.core.lens import StepLens

__all__ = ["StepLensView", "RunLensView", "CommitmentStrip", "shown_piece"]

_FIXED_COLUMNS = ("Layer", "P(chosen)", "Rank", "Entropy")


def shown_piece(text: str) -> str:
    """A token's text as the lens shows it: quoted, spaces and line breaks visible."""
    return "“" + str(text).replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣") + "”"


def _plain_label(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setTextFormat(Qt.PlainText)
    label.setWordWrap(True)
    return label


def _lut(palette: str) -> np.ndarray:
    return np.array(palette_lut(palette), dtype=np.ubyte)


class StepLensView(QWidget):
    """One step's lens (see the module docstring)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._palette = DEFAULT_PALETTE
        self._lens: StepLens | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        self.header = _plain_label("Choose a step (click a token) and Run > Layer lens of this step (Ctrl+L).")
        self.header.setStyleSheet("font-weight: bold")
        lay.addWidget(self.header)
        self.note = _plain_label("")
        lay.addWidget(self.note)
        split = QSplitter(Qt.Vertical)
        self.table = QTableWidget(0, len(_FIXED_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(_FIXED_COLUMNS))
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setToolTip("Each layer's output projected through the model's own final norm and unembedding: "
                              "its likeliest tokens, and the chosen token's probability and rank there")
        split.addWidget(self.table)
        self.plot_widget = plain_plot_widget()
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setTitle("P(chosen token) by layer")
        self.plot.setLabel("bottom", "layer")
        self.plot.setLabel("left", "probability")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.image = pg.ImageItem()
        self.image.setLookupTable(_lut(self._palette))
        self.image.setLevels((0.0, 1.0))
        self.plot.addItem(self.image)
        self.curve = self.plot.plot([], [], pen=pg.mkPen((255, 255, 255), width=2), symbol="o", symbolSize=5,
                                    symbolBrush=(255, 255, 255), symbolPen=(30, 30, 30))
        self.commit_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((230, 60, 60), width=2, style=Qt.DashLine))
        self.plot.addItem(self.commit_line)
        self.commit_text = pg.TextItem("", color=(230, 60, 60), anchor=(0, 0))
        self.plot.addItem(self.commit_text)
        self.commit_line.setVisible(False)
        self.plot.setYRange(0, 1, padding=0.02)
        split.addWidget(self.plot_widget)
        split.setSizes([560, 240])
        lay.addWidget(split, 1)

    # ------------------------------------------------------------------ showing
    def set_palette(self, name: str) -> None:
        self._palette = name
        self.image.setLookupTable(_lut(name))
        if self._lens is not None:
            self.show_lens(self._lens)

    def show_message(self, header: str, note: str = "") -> None:
        """No lens to show (yet): say why, or what is being computed."""
        self.header.setText(header)
        self.note.setText(note)

    def clear(self) -> None:
        self._lens = None
        self.table.setRowCount(0)
        self.curve.setData([], [])
        self.image.clear()
        self.commit_line.setVisible(False)
        self.commit_text.setText("")

    @property
    def lens(self) -> StepLens | None:
        return self._lens

    def show_lens(self, lens: StepLens, note: str = "") -> None:
        self._lens = lens
        n = len(lens.layers)
        c = lens.commitment_layer
        where = (f"the model commits to it at layer {c} of {n} (layers 0 to {n - 1}) and keeps it to the last"
                 if c is not None else "the last layer's favourite is another token (a sampled token)")
        self.header.setText(f"Step {lens.index}: {shown_piece(lens.token)} — {where}")
        if note:
            self.note.setText(note)
        k = max((len(x.top) for x in lens.layers), default=0)
        t = self.table
        t.setUpdatesEnabled(False)
        t.clear()
        t.setColumnCount(len(_FIXED_COLUMNS) + k)
        t.setHorizontalHeaderLabels(list(_FIXED_COLUMNS) + [f"#{i + 1}" for i in range(k)])
        t.setRowCount(n)
        bold = QFont(t.font())
        bold.setBold(True)
        for row, layer in enumerate(lens.layers):
            mark = "  ◀ commits" if c is not None and layer.layer == c else ""
            cells = [self._item(f"{layer.layer}{mark}", None),
                     self._item(f"{layer.p_chosen:.1%}", layer.p_chosen),
                     self._item(f"{layer.rank_chosen:,}", None),
                     self._item(f"{layer.entropy:.2f}", None)]
            cells[0].setToolTip(plain_tip(f"layer {layer.layer} (llama.cpp's l_out-{layer.layer})"))
            cells[1].setToolTip(plain_tip(f"the chosen token {shown_piece(lens.token)} has probability "
                                          f"{layer.p_chosen:.3%} at layer {layer.layer}"))
            cells[3].setToolTip(plain_tip("entropy of this layer's projected distribution, in nats"))
            for tid, text, p in layer.top:
                item = self._item(f"{shown_piece(text)} {p:.0%}", p)
                item.setToolTip(plain_tip(f"{shown_piece(text)} (id {tid}): {p:.3%} at layer {layer.layer}"))
                if tid == lens.token_id:
                    item.setFont(bold)
                cells.append(item)
            if c is not None and layer.layer >= c:
                cells[0].setFont(bold)
            for col, item in enumerate(cells):
                t.setItem(row, col, item)
        t.setUpdatesEnabled(True)
        self._draw_heat(lens)

    def _item(self, text: str, p: float | None) -> QTableWidgetItem:
        item = QTableWidgetItem(text)  # a table item's text is plain
        item.setFlags(Qt.ItemIsEnabled)
        if p is not None:
            bg, fg = colors_for(p, self._palette)
            item.setBackground(QBrush(QColor(*bg)))
            item.setForeground(QBrush(QColor(*fg)))
        return item

    def _draw_heat(self, lens: StepLens) -> None:
        p = lens.p_chosen
        n = len(p)
        self.image.setImage(p.reshape(n, 1), levels=(0.0, 1.0), autoLevels=False)
        self.image.setRect(QRectF(-0.5, 0.0, float(n), 1.0))
        self.curve.setData(np.arange(n, dtype=float), p)
        c = lens.commitment_layer
        self.commit_line.setVisible(c is not None)
        if c is not None:
            self.commit_line.setValue(c - 0.5)
            self.commit_text.setText(f"commits at {c}")
            late = c > (n - 1) / 2  # the label on the side with room
            self.commit_text.setAnchor((1, 0) if late else (0, 0))
            self.commit_text.setPos(c - 0.55 if late else c - 0.45, 0.98)
        else:
            self.commit_text.setText("")
        self.plot.setXRange(-0.5, n - 0.5, padding=0)
        self.plot.setYRange(0, 1, padding=0.02)


class RunLensView(QWidget):
    """A whole run's lens, filled as the steps arrive (see the module docstring)."""

    stepClicked = Signal(int)
    stopRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._palette = DEFAULT_PALETTE
        self._n_layers = 0
        self._n_steps = 0
        self._p = np.zeros((0, 0))
        self._commit: list[int | None] = []
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        row = QHBoxLayout()
        self.status = _plain_label("Run > Layer lens of the whole run (Ctrl+Shift+L) computes every step's lens "
                                   "in the background.")
        row.addWidget(self.status, 1)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(240)
        self.progress.setVisible(False)
        row.addWidget(self.progress)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the run's lens after the current step (the steps done are kept)")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stopRequested)
        row.addWidget(self.stop_button)
        lay.addLayout(row)
        self.plot_widget = plain_plot_widget()
        self.plot = self.plot_widget.getPlotItem()
        self.plot.setTitle("P(chosen token) at each layer, step by step (dots: commitment layer)")
        self.plot.setLabel("bottom", "step")
        self.plot.setLabel("left", "layer")
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.image = pg.ImageItem()
        self.image.setLookupTable(_lut(self._palette))
        self.image.setLevels((0.0, 1.0))
        self.plot.addItem(self.image)
        self.dots = pg.ScatterPlotItem(size=6, brush=pg.mkBrush(255, 255, 255), pen=pg.mkPen(30, 30, 30))
        self.plot.addItem(self.dots)
        self.selected_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen((230, 60, 60), width=2))
        self.selected_line.setVisible(False)
        self.plot.addItem(self.selected_line)
        self.plot_widget.scene().sigMouseClicked.connect(self._clicked)
        self.plot_widget.setToolTip("Click a cell to open that step's lens")
        lay.addWidget(self.plot_widget, 1)

    def set_palette(self, name: str) -> None:
        self._palette = name
        self.image.setLookupTable(_lut(name))

    def select(self, index: int | None) -> None:
        """Mark step ``index`` (the one the step tab shows); None: no mark."""
        self.selected_line.setVisible(index is not None and 0 <= index < self._n_steps)
        if index is not None:
            self.selected_line.setValue(index)

    def start(self, n_steps: int, n_layers: int) -> None:
        """A new run's lens of ``n_steps`` steps begins (what was shown goes)."""
        self._n_steps, self._n_layers = int(n_steps), int(n_layers)
        self._p = np.full((self._n_steps, self._n_layers), np.nan)
        self._commit = [None] * self._n_steps
        self.progress.setRange(0, max(1, self._n_steps))
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.stop_button.setEnabled(True)
        self.status.setText(f"Computing the lens of {self._n_steps} steps…")
        self._draw()

    def clear(self) -> None:
        self._n_steps = self._n_layers = 0
        self._p = np.zeros((0, 0))
        self._commit = []
        self.image.clear()
        self.dots.setData([], [])
        self.selected_line.setVisible(False)
        self.progress.setVisible(False)
        self.stop_button.setEnabled(False)

    def add(self, lens: StepLens) -> None:
        if not 0 <= lens.index < self._n_steps:
            return
        self._p[lens.index, :] = lens.p_chosen[: self._n_layers]
        self._commit[lens.index] = lens.commitment_layer
        done = sum(1 for i in range(self._n_steps) if not math.isnan(self._p[i, 0]))
        self.progress.setValue(done)

    def redraw(self) -> None:
        self._draw()

    def finish(self, text: str) -> None:
        self.progress.setVisible(False)
        self.stop_button.setEnabled(False)
        self.status.setText(text)
        self._draw()

    @property
    def commitments(self) -> list[int | None]:
        return list(self._commit)

    def _draw(self) -> None:
        if not self._n_steps:
            self.image.clear()
            self.dots.setData([], [])
            return
        shown = np.nan_to_num(self._p, nan=0.0)
        self.image.setImage(shown, levels=(0.0, 1.0), autoLevels=False)
        self.image.setRect(QRectF(-0.5, -0.5, float(self._n_steps), float(self._n_layers)))
        pts = [(i, c) for i, c in enumerate(self._commit) if c is not None]
        self.dots.setData([x for x, _ in pts], [y for _, y in pts])
        self.plot.setXRange(-0.5, self._n_steps - 0.5, padding=0)
        self.plot.setYRange(-0.5, self._n_layers - 0.5, padding=0)

    def cell_at(self, x: float, y: float) -> tuple[int, int] | None:
        """The (step, layer) under view coordinates (x, y), or None outside the heatmap."""
        step, layer = int(round(x)), int(round(y))
        if 0 <= step < self._n_steps and 0 <= layer < self._n_layers:
            return step, layer
        return None

    def _clicked(self, event) -> None:
        vb = self.plot.getViewBox()
        if not vb.sceneBoundingRect().contains(event.scenePos()):
            return
        pos = vb.mapSceneToView(event.scenePos())
        cell = self.cell_at(pos.x(), pos.y())
        if cell is not None and not math.isnan(self._p[cell[0], 0]):
            self.stepClicked.emit(cell[0])


class CommitmentStrip(QWidget):
    """One cell per step: how early its token was settled (see the module docstring)."""

    stepClicked = Signal(int)

    HEIGHT = 22

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._palette = DEFAULT_PALETTE
        self._commit: list[int | None] = []
        self._tokens: list[str] = []
        self._n_layers = 1
        self._selected: int | None = None
        self.setMouseTracking(True)
        self.setMinimumHeight(self.HEIGHT)
        self.setMaximumHeight(self.HEIGHT)
        self.setToolTip("Commitment layer of each token: the first layer from which it stays the favourite "
                        "(bright: settled early; dark: only at the last layers; –: not the last layer's "
                        "favourite). Click a cell for that step's lens.")

    def set_palette(self, name: str) -> None:
        self._palette = name
        self.update()

    def set_commitments(self, commit: Sequence[int | None], tokens: Sequence[str], n_layers: int) -> None:
        """Each step's commitment layer (None: the last layer's favourite is another token; -1:
        not computed yet), its token text, the model's number of layers."""
        self._commit = list(commit)
        self._tokens = list(tokens)
        self._n_layers = max(1, int(n_layers))
        self.update()

    def select(self, index: int | None) -> None:
        self._selected = index
        self.update()

    @property
    def commitments(self) -> list[int | None]:
        return list(self._commit)

    def _cell_width(self) -> float:
        return self.width() / max(1, len(self._commit))

    def index_at(self, x: float) -> int | None:
        if not self._commit:
            return None
        i = int(x // self._cell_width())
        return i if 0 <= i < len(self._commit) else None

    def earliness(self, c: int | None) -> float | None:
        """0..1: 1 for a token settled at the first layer, near 0 at the last; None: never."""
        if c is None:
            return None
        return 1.0 - c / self._n_layers

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        w = self._cell_width()
        h = self.height()
        fm = p.fontMetrics()
        for i, c in enumerate(self._commit):
            rect = QRectF(i * w, 0, max(1.0, w - (1 if w > 4 else 0)), h)
            if c is not None and c < 0:  # not computed (yet)
                p.fillRect(rect, self.palette().color(self.backgroundRole()).darker(105))
                continue
            e = self.earliness(c)
            if e is None:
                bg = (200, 200, 200)
                fg = text_color_for(bg)
                text = "–"
            else:
                bg, fg = colors_for(e, self._palette)
                text = str(c)
            p.fillRect(rect, QColor(*bg))
            if w >= fm.horizontalAdvance(text) + 2:
                p.setPen(QColor(*fg))
                p.drawText(rect, Qt.AlignCenter, text)
            if i == self._selected:
                p.setPen(QPen(QColor(230, 60, 60), 2))
                p.drawRect(rect.adjusted(1, 1, -1, -1))
        p.end()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        i = self.index_at(event.position().x())
        if i is not None:
            self.stepClicked.emit(i)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        i = self.index_at(event.position().x())
        if i is None:
            return
        c = self._commit[i]
        token = shown_piece(self._tokens[i]) if i < len(self._tokens) else ""
        what = ("its lens is not computed yet" if c is not None and c < 0
                else f"commits at layer {c} of {self._n_layers}" if c is not None
                else "not the last layer's favourite (sampled)")
        self.setToolTip(plain_tip(f"step {i} {token}: {what}"))
