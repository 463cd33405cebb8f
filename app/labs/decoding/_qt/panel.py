"""The decoding strategies and branching lab's view: side-by-side columns, the branch tree, A/B.

Owns: ``DecodingLabPanel`` with three tabs.
- "Side by side": a prompt, a list of strategies (greedy, beam:W, top-k:K, top-p:P, min-p:P,
  temp:T, typical:P), max tokens, seed; the columns fill in lockstep (step k of every column
  before step k+1) as a token heatmap (cell colour = the token's raw probability), the first
  step where the columns part is marked, and a table of each column's total log-probability,
  perplexity, mean entropy and length, plus the beams of beam columns with their summed
  log-probabilities.
- "Branches": the tree of every branch of one prompt (each item a stretch of tokens between
  forks, with the probability of its first edge and the cumulative probability of the path);
  selecting an item opens its path below, token by token; right-click a token to take one of
  its alternatives (or type one), or to generate N children from there.
- "A/B": two strategies (and optionally a second GGUF model) on one prompt; per step the KL
  and total variation between their next-token distributions over the union of their top-N,
  their agreement and the first fork.
It only shows and asks (signals); ``app.labs.decoding._qt.presenter`` runs the jobs and calls
its methods (``set_running``, ``advance``, ``add_record``, ``show_summary``, ``set_tree``,
``show_branches``, ``show_ab``, ``show_status``). The knobs it gives (``params``: a
``RunParams``) and the records, summaries and tree it shows are the lab's typed values
(``app.labs.decoding.records``), live and reopened alike; ``results``, ``export_data``,
``csv_rows`` and ``columns_data`` give them back as plain data (the records' dict forms).
GUI thread only. Model output appears only in plain-text widgets (table and tree items, plain
labels).

Over 500 lines on purpose: one panel (grid, tree, A/B) of one lab; its parts share the panel's
record replay.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

import pyqtgraph as pg

from app.core.records import plain
from app.labs.decoding.records import (ABParams, ABSummary, BranchTreeData, ColumnRecord, ColumnSummary, ForkRecord,
                                       LockstepSummary, RunParams, StepRecord, TopEntry, TreeNode)
from widgets.formatting import menu_text
from widgets.lab_controls import OPEN_IN_WORKBENCH, fmt_number, offer_traces, table_item
from widgets.lab_plot import LabPlot
from widgets.palettes import colors_for

__all__ = ["DecodingLabPanel", "DEFAULT_STRATEGIES", "visible"]

DEFAULT_STRATEGIES = "greedy, beam:4, top-k:40, top-p:0.9, temp:0.7, temp:1.3, min-p:0.1"
DEFAULT_PROMPT = "Once upon a time, in a small village by the sea,"


def visible(piece: str) -> str:
    """A token as shown in a cell: spaces as "·", line breaks as "↵", tabs as "→"."""
    return (piece or "").replace(" ", "·").replace("\n", "↵").replace("\t", "→") or "∅"


def _percent(p: float) -> str:
    """A probability as a percentage (an unknown one, NaN, as 0)."""
    return f"{100 * (p if math.isfinite(p) else 0):.1f}%"


def _alternatives(top: tuple[TopEntry, ...], n: int) -> str:
    """The first ``n`` alternatives as "token p%"."""
    return ", ".join(f"{visible(a.token)} {_percent(a.p_raw)}" for a in top[:n])


def _label(c: ColumnRecord | ColumnSummary) -> str:
    return c.label or c.strategy


#: the figures of this lab: four significant digits
_fmt = partial(fmt_number, digits=4)


class ABPlot(LabPlot):
    """KL and TV between A and B per step, agreement as markers, the first fork as a line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("A vs B: distance between next-token distributions", "step", grid=True, parent=parent)
        self.item.addLegend(offset=(10, 10))

    def show(self, result: ABSummary) -> None:
        self.item.clear()
        self.item.addLegend(offset=(10, 10))
        rows = result.steps
        x = np.array([r.step for r in rows], dtype=float)
        kl = np.array([math.nan if r.kl_ab is None else r.kl_ab for r in rows], dtype=float)
        tv = np.array([r.tv for r in rows], dtype=float)
        agree = np.array([1.0 if r.agree else 0.0 for r in rows], dtype=float)
        self.item.plot(x, tv, pen=pg.mkPen((0, 114, 178), width=2), name="TV(A, B)", connect="finite")
        self.item.plot(x, kl, pen=pg.mkPen((230, 159, 0), width=2), name="KL(A ‖ B) (nats)", connect="finite")
        self.item.plot(x, agree * -0.05, pen=None, symbol="s", symbolSize=6,
                       symbolBrush=[pg.mkBrush(0, 158, 115) if a else pg.mkBrush(213, 94, 0) for a in agree],
                       name="same token (green) / different (red)")
        fork = result.first_fork
        if fork is not None:
            self.item.addItem(pg.InfiniteLine(fork, angle=90, pen=pg.mkPen((213, 94, 0), width=2),
                                              label=f"first fork: step {fork}",
                                              labelOpts={"position": 0.6, "color": (213, 94, 0)}))
        self._data = {"x": x, "kl": kl, "tv": tv, "agree": agree, "fork": fork}


class DecodingLabPanel(QWidget):
    runRequested = Signal()
    stopRequested = Signal()
    branchFromWorkbenchRequested = Signal()
    branchRequested = Signal(int, int)  # node id of the position's parent, token id (-1: sample)
    branchTextRequested = Signal(int, str)  # parent node id, typed text
    childrenRequested = Signal(int, int)  # node id, n
    abRequested = Signal()
    openTraceRequested = Signal(object)  # a generation record: show it in the Workbench

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._columns: list[ColumnRecord] = []
        self._steps: list[StepRecord] = []
        self._summary: LockstepSummary | None = None
        self._fork: int | None = None
        self._tree: BranchTreeData | None = None
        self._path: list[int] = []
        self._ab: ABSummary | None = None
        self._build()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        top = QFormLayout()
        self.prompt_edit = QPlainTextEdit(DEFAULT_PROMPT)
        self.prompt_edit.setMaximumHeight(56)
        top.addRow("Prompt", self.prompt_edit)
        row = QHBoxLayout()
        self.strategies_edit = QLineEdit(DEFAULT_STRATEGIES)
        self.strategies_edit.setToolTip("Comma-separated: greedy, beam:W (beam:W:lp=ALPHA for a length penalty), "
                                        "top-k:K, top-p:P, min-p:P, temp:T, typical:P. Sampled strategies share "
                                        "the seed and differ in one knob (temperature 1 otherwise).")
        row.addWidget(self.strategies_edit, 1)
        row.addWidget(QLabel("max tokens"))
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 512)
        self.max_tokens.setValue(24)
        self.max_tokens.setToolTip("Tokens each column (and each side of an A/B run) generates at most, "
                                   "1 to 512 (llama.cpp -n / n_predict); a column ends earlier at a stop "
                                   "string or the end-of-text token.")
        row.addWidget(self.max_tokens)
        row.addWidget(QLabel("stop at"))
        self.stop_edit = QLineEdit("")
        self.stop_edit.setPlaceholderText("e.g. \\n|.")
        self.stop_edit.setMaximumWidth(110)
        self.stop_edit.setToolTip("Stop strings, separated by |  (\\n for a line break). A column or a beam ends "
                                  "at one; beams also end at the end-of-text token.")
        row.addWidget(self.stop_edit)
        row.addWidget(QLabel("seed"))
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(42)
        self.seed.setToolTip("Random seed of the sampled columns and of A/B, 0 to 2^31-1 (llama.cpp --seed): "
                             "every sampled strategy draws with the same seed, so the columns differ only "
                             "in their knob. Greedy and beam columns do not draw.")
        row.addWidget(self.seed)
        top.addRow("Strategies", row)
        brow = QHBoxLayout()
        self.run_button = QPushButton("Run side by side")
        self.run_button.setToolTip("Every column takes step k before any takes step k+1 (beam columns are "
                                   "searched first, then shown step by step)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop at the next token; what arrived is kept (Esc)")
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setFormat("step %v / %m")
        self.status = QLabel("")
        self.status.setTextFormat(Qt.PlainText)
        self.status.setWordWrap(True)
        for w in (self.run_button, self.stop_button, self.progress):
            brow.addWidget(w)
        brow.addWidget(self.status, 1)
        top.addRow(brow)

        self.remote_note = QLabel("")
        self.remote_note.setTextFormat(Qt.PlainText)
        self.remote_note.setWordWrap(True)
        self.remote_note.setStyleSheet("color: #666;")
        self.remote_note.setVisible(False)
        top.addRow(self.remote_note)

        self.tabs = QTabWidget()
        # ---- side by side
        side = QWidget()
        sl = QVBoxLayout(side)
        self.columns_table = QTableWidget(0, 0)
        self.columns_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.columns_table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.columns_table.setSelectionMode(QAbstractItemView.SingleSelection)
        sl.addWidget(self.columns_table, 3)
        self.cell_note = QLabel("Cell colour: the token's raw probability (Viridis). Select a cell for details.")
        self.cell_note.setTextFormat(Qt.PlainText)
        self.cell_note.setWordWrap(True)
        sl.addWidget(self.cell_note)
        self.totals_table = QTableWidget(0, 6)
        self.totals_table.setHorizontalHeaderLabels(["strategy", "total log-prob", "perplexity", "mean entropy",
                                                     "length", "text"])
        self.totals_table.horizontalHeader().setSectionResizeMode(5, QHeaderView.Stretch)
        self.totals_table.verticalHeader().setVisible(False)
        offer_traces(self.totals_table, self._column_traces, self.openTraceRequested.emit)
        sl.addWidget(self.totals_table, 1)
        self.beams_table = QTableWidget(0, 4)
        self.beams_table.setHorizontalHeaderLabels(["beam column", "summed log-prob", "score", "text"])
        self.beams_table.horizontalHeader().setSectionResizeMode(3, QHeaderView.Stretch)
        self.beams_table.verticalHeader().setVisible(False)
        offer_traces(self.beams_table, self._beam_traces, self.openTraceRequested.emit)
        sl.addWidget(self.beams_table, 1)
        self.tabs.addTab(side, "Side by side")

        # ---- branches
        br = QWidget()
        bl = QVBoxLayout(br)
        brow2 = QHBoxLayout()
        self.from_workbench_button = QPushButton("Start from the workbench run")
        self.from_workbench_button.setToolTip("Put the Workbench tab's last run into a new tree as its first path")
        self.children_n = QSpinBox()
        self.children_n.setRange(1, 50)
        self.children_n.setValue(3)
        self.children_n.setToolTip("How many continuations 'Generate N children here' samples")
        brow2.addWidget(self.from_workbench_button)
        brow2.addWidget(QLabel("children N"))
        brow2.addWidget(self.children_n)
        brow2.addStretch(1)
        bl.addLayout(brow2)
        split = QSplitter(Qt.Vertical)
        self.tree_widget = QTreeWidget()
        self.tree_widget.setHeaderLabels(["tokens", "p of first token", "cumulative p of the path", "ends"])
        self.tree_widget.header().setSectionResizeMode(0, QHeaderView.Stretch)
        split.addWidget(self.tree_widget)
        self.path_table = QTableWidget(0, 5)
        self.path_table.setHorizontalHeaderLabels(["token", "p (raw)", "p (chain)", "cumulative p", "alternatives"])
        self.path_table.horizontalHeader().setSectionResizeMode(4, QHeaderView.Stretch)
        self.path_table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.path_table.setContextMenuPolicy(Qt.CustomContextMenu)
        self.path_table.setToolTip("Right-click a token: take one of its alternatives, type your own, or "
                                   "generate N children from there")
        split.addWidget(self.path_table)
        bl.addWidget(split, 1)
        self.path_note = QLabel("")
        self.path_note.setTextFormat(Qt.PlainText)
        self.path_note.setWordWrap(True)
        bl.addWidget(self.path_note)
        self.tabs.addTab(br, "Branches")

        # ---- A/B
        ab = QWidget()
        al = QVBoxLayout(ab)
        arow = QHBoxLayout()
        self.ab_a = QLineEdit("temp:0.7")
        self.ab_b = QLineEdit("temp:1.3")
        for side, w in (("A", self.ab_a), ("B", self.ab_b)):
            w.setToolTip(f"Strategy {side}: one of greedy, top-k:K, top-p:P, min-p:P, temp:T, typical:P "
                         "(not beam: a beam search has no per-step distribution of its own). It uses the "
                         "prompt, max tokens and seed above.")
        self.ab_model_b = QLineEdit("")
        self.ab_model_b.setPlaceholderText("same model (or a path to another GGUF file)")
        self.ab_model_b.setToolTip("Leave empty to compare two settings on one model; give a GGUF path to "
                                   "compare two models (B uses strategy B)")
        self.ab_button = QPushButton("Run A/B")
        self.ab_button.setToolTip("Generate with A and with B on the prompt above and plot, per step, the KL "
                                  "divergence and total variation between their next-token distributions, "
                                  "whether they chose the same token, and their first fork")
        for label, w in (("A", self.ab_a), ("B", self.ab_b), ("model B", self.ab_model_b)):
            arow.addWidget(QLabel(label))
            arow.addWidget(w, 1 if w is self.ab_model_b else 0)
        arow.addWidget(self.ab_button)
        al.addLayout(arow)
        self.ab_plot = ABPlot()
        al.addWidget(self.ab_plot, 1)
        self.ab_note = QLabel("")
        self.ab_note.setTextFormat(Qt.PlainText)
        self.ab_note.setWordWrap(True)
        al.addWidget(self.ab_note)
        self.tabs.addTab(ab, "A/B")

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.tabs, 1)

        self.run_button.clicked.connect(self.runRequested)
        self.stop_button.clicked.connect(self.stopRequested)
        self.from_workbench_button.clicked.connect(self.branchFromWorkbenchRequested)
        self.ab_button.clicked.connect(self.abRequested)
        self.columns_table.itemSelectionChanged.connect(self._on_cell)
        self.tree_widget.itemSelectionChanged.connect(self._on_tree_select)
        self.path_table.customContextMenuRequested.connect(self._path_menu)

    # ------------------------------------------------------------------ knobs
    def set_remote(self, reasons: dict[str, str] | None) -> None:
        """A server is the model (``reasons``: what it cannot do, and why) or not (None): what a
        server cannot do is greyed out with the reason."""
        self.remote_note.setVisible(bool(reasons))
        self.ab_model_b.setEnabled(not reasons)
        if reasons:
            self.remote_note.setText("Connected to a server. Not available: beam columns ("
                                     + reasons["beam"] + "); exact distributions (" + reasons["exact"]
                                     + "). Branches continue as a new request (" + reasons["branch-logits"] + ").")
            self.ab_model_b.setToolTip("A second local model needs the local backend: disconnect the server first")
        else:
            self.ab_model_b.setToolTip("Leave empty to compare two settings on one model; give a GGUF path to "
                                       "compare two models (B uses strategy B)")

    def params(self) -> RunParams:
        """The knobs, for a side-by-side run (the presenter sets ``mode`` "ab" for an A/B run)."""
        stops = tuple(x.replace("\\n", "\n") for x in self.stop_edit.text().split("|") if x)
        return RunParams(prompt=self.prompt_edit.toPlainText(), strategies=self.strategies_edit.text(),
                         max_tokens=self.max_tokens.value(), seed=self.seed.value(), stop=stops,
                         ab=ABParams(self.ab_a.text().strip(), self.ab_b.text().strip(),
                                     self.ab_model_b.text().strip() or None),
                         children_n=self.children_n.value())

    def set_running(self, running: bool, total: int = 0) -> None:
        for b in (self.run_button, self.ab_button, self.from_workbench_button):
            b.setEnabled(not running)
        self.stop_button.setEnabled(running)
        if running:
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(0)
            self.status.setText("Running…")

    def advance(self) -> None:
        """One more unit of the running job's progress (a tree job's node), up to its total."""
        self.progress.setValue(min(self.progress.value() + 1, self.progress.maximum()))

    def show_branches(self) -> None:
        """Bring the "Branches" tab to the front."""
        self.tabs.setCurrentIndex(1)

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    def show_error(self, message: str) -> None:
        self.set_running(False)
        self.status.setText(message)

    # ------------------------------------------------------------------ side by side
    def start_columns(self) -> None:
        self._columns, self._steps, self._summary, self._fork = [], [], None, None
        self.columns_table.clear()
        self.columns_table.setRowCount(0)
        self.columns_table.setColumnCount(0)
        self.totals_table.setRowCount(0)
        self.beams_table.setRowCount(0)
        self.tabs.setCurrentIndex(0)

    def add_record(self, rec: ColumnRecord | StepRecord | ForkRecord) -> None:
        """One record of a side-by-side run: a column's head, a step's token, the fork."""
        t = self.columns_table
        if isinstance(rec, ColumnRecord):
            self._columns.append(rec)
            t.setColumnCount(len(self._columns))
            t.setHorizontalHeaderItem(len(self._columns) - 1, QTableWidgetItem(_label(rec)))
        elif isinstance(rec, StepRecord):
            self._steps.append(rec)
            k, col = rec.step, rec.column
            if t.rowCount() <= k:
                t.setRowCount(k + 1)
                t.setVerticalHeaderItem(k, QTableWidgetItem(str(k)))
            item = table_item(visible(rec.token or rec.piece))
            if math.isfinite(rec.p_raw):
                bg, fg = colors_for(rec.p_raw)
                item.setBackground(QBrush(QColor(*bg)))
                item.setForeground(QBrush(QColor(*fg)))
            t.setItem(k, col, item)
            self.progress.setValue(max(self.progress.value(), k + 1))
        elif isinstance(rec, ForkRecord):
            self._fork = rec.step
            if t.rowCount() <= self._fork:
                t.setRowCount(self._fork + 1)
            t.setVerticalHeaderItem(self._fork, QTableWidgetItem(f"{self._fork} ◀ fork"))

    def show_summary(self, summary: LockstepSummary | None, status: str) -> None:
        """The end of a side-by-side run: each column's figures and the beams of beam columns
        (None: the run was cut short before its summary)."""
        self.set_running(False)
        self._summary = summary
        self.status.setText(("Stopped; what arrived is kept and saved." if status == "stopped" else "Done.")
                            + (f" First fork at step {summary.fork_step}." if summary is not None and
                               summary.fork_step is not None else ""))
        if summary is None:
            return
        cols = summary.columns
        self.totals_table.setRowCount(len(cols))
        for i, c in enumerate(cols):
            cells = [_label(c), _fmt(c.total_logprob), _fmt(c.perplexity), _fmt(c.mean_entropy), c.length,
                     " ".join(c.text.split())]
            for j, v in enumerate(cells):
                self.totals_table.setItem(i, j, table_item(v))
        beams = self._beams()
        self.beams_table.setRowCount(len(beams))
        for i, (label, b) in enumerate(beams):
            for j, v in enumerate([label, _fmt(b.logprob), _fmt(b.score), " ".join(b.text.split())]):
                self.beams_table.setItem(i, j, table_item(v))

    def _beams(self) -> list[tuple[str, Any]]:
        """(column label, ``BeamSummary``) of every beam column's beams, in table order."""
        cols = self._summary.columns if self._summary is not None else ()
        return [(_label(c), b) for c in cols if c.beam is not None for b in c.beam.beams]

    def _column_traces(self, row: int) -> list[tuple[str, dict]]:
        cols = self._summary.columns if self._summary is not None else ()
        if not 0 <= row < len(cols) or not cols[row].trace:
            return []
        return [(_label(cols[row]), cols[row].trace)]

    def _beam_traces(self, row: int) -> list[tuple[str, dict]]:
        beams = self._beams()
        if not 0 <= row < len(beams) or not beams[row][1].trace:
            return []
        return [(f"{beams[row][0]}, beam {row + 1}", beams[row][1].trace)]

    def open_path_in_workbench(self) -> None:
        """The path shown, token by token, in the Workbench."""
        if self._tree is not None and self._path:
            from app.labs.decoding import BranchTree

            self.openTraceRequested.emit(BranchTree.from_data(self._tree).path_generation(self._path[-1]))

    def _on_cell(self) -> None:
        items = self.columns_table.selectedItems()
        if not items:
            return
        k, col = items[0].row(), items[0].column()
        rec = next((s for s in self._steps if s.step == k and s.column == col), None)
        if rec is None:
            return
        self.cell_note.setText(f"{self._columns[col].label} step {k}: {visible(rec.token)} "
                               f"p_raw {_fmt(rec.p_raw)}, p_final {_fmt(rec.p_final)}, entropy "
                               f"{_fmt(rec.entropy_raw)} nats. Alternatives: {_alternatives(rec.top, 6)}")

    def columns_data(self) -> dict[str, Any]:
        """The side-by-side grid as plain data: tokens[column][step], the fork, the totals (the
        summary's dict form)."""
        n = len(self._columns)
        tokens: list[list[str]] = [[] for _ in range(n)]
        for s in sorted(self._steps, key=lambda s: (s.column, s.step)):
            tokens[s.column].append(s.token)
        return {"labels": [c.label for c in self._columns], "tokens": tokens, "fork": self._fork,
                "rows": self.columns_table.rowCount(), "summary": plain(self._summary)}

    # ------------------------------------------------------------------ branches
    def set_tree(self, tree: BranchTreeData | None, open_node: int | None = None) -> None:
        """Show a branch tree: stretches of tokens between forks as tree items (None: none)."""
        self._tree = tree
        self.tree_widget.clear()
        if tree is None:
            return
        nodes = tree.nodes
        root = QTreeWidgetItem(["[prompt] " + " ".join(tree.prompt.split())[:80], "", "1", ""])
        root.setData(0, Qt.UserRole, 0)
        self.tree_widget.addTopLevelItem(root)
        cum = {0: 1.0}

        def add_chain(parent_item: QTreeWidgetItem, first: int) -> None:
            chain = [first]
            while len(nodes[chain[-1]].children) == 1:
                chain.append(nodes[chain[-1]].children[0])
            for nid in chain:
                n = nodes[nid]
                cum[nid] = cum[n.parent if n.parent is not None else 0] * n.p_raw
            last = nodes[chain[-1]]
            text = "".join(visible(nodes[c].piece) for c in chain)
            item = QTreeWidgetItem([text, _fmt(nodes[first].p_raw), _fmt(cum[chain[-1]]), last.finish_reason or ""])
            item.setData(0, Qt.UserRole, chain[-1])
            parent_item.addChild(item)
            for child in last.children:
                add_chain(item, child)

        for child in nodes[0].children:
            add_chain(root, child)
        self.tree_widget.expandAll()
        if open_node is not None:
            self.open_path(open_node)

    def _on_tree_select(self) -> None:
        items = self.tree_widget.selectedItems()
        if items:
            self.open_path(int(items[0].data(0, Qt.UserRole)))

    def open_path(self, node_id: int) -> None:
        """Show the path from the root to ``node_id`` token by token."""
        if self._tree is None:
            return
        nodes = self._tree.nodes
        path = self._tree.path(node_id)
        self._path = path
        t = self.path_table
        t.setRowCount(len(path))
        cum = 1.0
        for i, nid in enumerate(path):
            n = nodes[nid]
            cum *= n.p_raw
            for j, v in enumerate([visible(n.piece) + (" (chosen by you)" if n.forced else ""),
                                   _fmt(n.p_raw), _fmt(n.p_final), _fmt(cum), _alternatives(n.top, 5)]):
                t.setItem(i, j, table_item(v))
        self.path_note.setText(f"Path of {len(path)} tokens; cumulative probability {_fmt(cum)} "
                               f"(log {_fmt(math.log(cum)) if cum and cum > 0 else '–'}).")

    def _path_menu(self, pos) -> None:
        row = self.path_table.rowAt(pos.y())
        if row < 0 or self._tree is None or row >= len(self._path):
            return
        menu = self.path_menu_for(row)
        menu.exec(self.path_table.viewport().mapToGlobal(pos))

    def path_menu_for(self, row: int) -> QMenu:
        """The right-click menu of the path's ``row``-th token: its alternatives (taking one
        continues from there), "Type a token…", "Generate N children here"."""
        assert self._tree is not None, "a path is shown"
        node: TreeNode = self._tree.node(self._path[row])
        parent = node.parent if node.parent is not None else 0
        menu = QMenu(self)
        for a in node.top:
            if a.token == node.piece and (a.id is None or a.id == node.token_id):
                continue  # the token taken
            act = menu.addAction(menu_text(f"Take {visible(a.token)!s} ({_percent(a.p_raw)})"))
            if a.id is None:  # a server's alternative: continued as text
                act.triggered.connect(lambda _=False, p=parent, t=a.token: self.branchTextRequested.emit(p, t))
            else:
                act.triggered.connect(lambda _=False, p=parent, t=a.id: self.branchRequested.emit(p, t))
        menu.addSeparator()
        whole = menu.addAction(OPEN_IN_WORKBENCH + ": this path")
        whole.triggered.connect(self.open_path_in_workbench)
        typed = menu.addAction("Type a token…")
        typed.triggered.connect(lambda: self._type_token(parent))
        n = self.children_n.value()
        kids = menu.addAction(f"Generate {n} children here")
        kids.triggered.connect(lambda: self.childrenRequested.emit(parent, self.children_n.value()))
        return menu

    def _type_token(self, parent: int) -> None:
        text, ok = QInputDialog.getText(self, "Type a token", "Text to put here (its first token is taken):")
        if ok and text:
            self.branchTextRequested.emit(parent, text)

    def tree_data(self) -> BranchTreeData | None:
        return self._tree

    # ------------------------------------------------------------------ A/B
    def show_ab(self, result: ABSummary) -> None:
        self._ab = result
        self.ab_plot.show(result)
        fork = result.first_fork
        self.ab_note.setText(
            f"Compared {result.n_compared} steps; agreement {_fmt(result.agreement)}; first fork "
            f"{fork if fork is not None else 'none'}; mean TV "
            f"{_fmt(result.mean_tv)}, mean KL(A‖B) {_fmt(result.mean_kl_ab)} nats over all steps, "
            f"{_fmt(result.mean_tv_same_context)} / {_fmt(result.mean_kl_ab_same_context)} up to the "
            "fork (same text before). Distances use the union of both top-N lists; the mass outside is shared out.")
        self.tabs.setCurrentIndex(2)

    # ------------------------------------------------------------------ exports
    def results(self) -> dict[str, Any]:
        """What the panel shows, as plain data (the records' dict forms): the side-by-side
        ``columns``, ``steps`` and ``summary``, the branch ``tree`` and the ``ab`` summary."""
        return {"columns": plain(self._columns), "steps": plain(self._steps), "summary": plain(self._summary),
                "tree": plain(self._tree), "ab": plain(self._ab)}

    def export_data(self) -> dict[str, Any]:
        """Plain JSON-ready data: the knobs and ``results``."""
        return {"lab": "decoding", "params": plain(self.params()), **self.results()}

    def csv_rows(self) -> tuple[list[str], list[list]]:
        header = ["column", "strategy", "step", "token", "token_id", "p_raw", "p_final", "logprob", "entropy_raw"]
        labels = {c.column: c.strategy for c in self._columns}
        return header, [[s.column, labels.get(s.column), s.step, s.token, s.token_id, s.p_raw, s.p_final, s.logprob,
                         s.entropy_raw] for s in self._steps]

    def current_plot(self):
        return self.ab_plot if self.tabs.currentIndex() == 2 else None
