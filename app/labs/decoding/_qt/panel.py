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
It only shows and asks (signals); ``app.labs.decoding._qt.presenter`` runs the jobs. GUI thread only. Model
output appears only in plain-text widgets (table and tree items, plain labels).

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




#: the figures of this lab: four significant digits
_fmt = partial(fmt_number, digits=4)


class ABPlot(LabPlot):
    """KL and TV between A and B per step, agreement as markers, the first fork as a line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("A vs B: distance between next-token distributions", "step", grid=True, parent=parent)
        self.item.addLegend(offset=(10, 10))

    def show(self, result: dict) -> None:
        self.item.clear()
        self.item.addLegend(offset=(10, 10))
        rows = result.get("steps") or []
        x = np.array([r["step"] for r in rows], dtype=float)
        kl = np.array([math.nan if r.get("kl_ab") is None else r["kl_ab"] for r in rows], dtype=float)
        tv = np.array([math.nan if r.get("tv") is None else r["tv"] for r in rows], dtype=float)
        agree = np.array([1.0 if r.get("agree") else 0.0 for r in rows], dtype=float)
        self.item.plot(x, tv, pen=pg.mkPen((0, 114, 178), width=2), name="TV(A, B)", connect="finite")
        self.item.plot(x, kl, pen=pg.mkPen((230, 159, 0), width=2), name="KL(A ‖ B) (nats)", connect="finite")
        self.item.plot(x, agree * -0.05, pen=None, symbol="s", symbolSize=6,
                       symbolBrush=[pg.mkBrush(0, 158, 115) if a else pg.mkBrush(213, 94, 0) for a in agree],
                       name="same token (green) / different (red)")
        fork = result.get("first_fork")
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
        self._columns: list[dict] = []  # column records
        self._steps: list[dict] = []
        self._summary: dict | None = None
        self._fork: int | None = None
        self._tree: dict | None = None
        self._path: list[int] = []
        self._ab: dict | None = None
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
        self.ab_model_b = QLineEdit("")
        self.ab_model_b.setPlaceholderText("same model (or a path to another GGUF file)")
        self.ab_model_b.setToolTip("Leave empty to compare two settings on one model; give a GGUF path to "
                                   "compare two models (B uses strategy B)")
        self.ab_button = QPushButton("Run A/B")
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

    def params(self) -> dict[str, Any]:
        stops = [x.replace("\\n", "\n") for x in self.stop_edit.text().split("|") if x]
        return {"prompt": self.prompt_edit.toPlainText(), "strategies": self.strategies_edit.text(),
                "max_tokens": self.max_tokens.value(), "seed": self.seed.value(), "stop": stops,
                "ab": {"a": self.ab_a.text().strip(), "b": self.ab_b.text().strip(),
                       "model_b": self.ab_model_b.text().strip() or None},
                "children_n": self.children_n.value()}

    def set_running(self, running: bool, total: int = 0) -> None:
        for b in (self.run_button, self.ab_button, self.from_workbench_button):
            b.setEnabled(not running)
        self.stop_button.setEnabled(running)
        if running:
            self.progress.setRange(0, max(1, total))
            self.progress.setValue(0)
            self.status.setText("Running…")

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

    def add_record(self, rec: dict) -> None:
        kind = rec.get("kind")
        t = self.columns_table
        if kind == "column":
            self._columns.append(rec)
            t.setColumnCount(len(self._columns))
            t.setHorizontalHeaderItem(len(self._columns) - 1, QTableWidgetItem(rec.get("label") or rec["strategy"]))
        elif kind == "step":
            self._steps.append(rec)
            k, col = rec["step"], rec["column"]
            if t.rowCount() <= k:
                t.setRowCount(k + 1)
                t.setVerticalHeaderItem(k, QTableWidgetItem(str(k)))
            item = table_item(visible(rec.get("token") or rec.get("piece") or ""))
            p = rec.get("p_raw")
            if p is not None and math.isfinite(p):
                bg, fg = colors_for(p)
                item.setBackground(QBrush(QColor(*bg)))
                item.setForeground(QBrush(QColor(*fg)))
            t.setItem(k, col, item)
            self.progress.setValue(max(self.progress.value(), k + 1))
        elif kind == "fork":
            self._fork = rec["step"]
            if t.rowCount() <= self._fork:
                t.setRowCount(self._fork + 1)
            t.setVerticalHeaderItem(self._fork, QTableWidgetItem(f"{self._fork} ◀ fork"))

    def show_summary(self, summary: dict | None, status: str) -> None:
        self.set_running(False)
        self._summary = summary
        self.status.setText(("Stopped; what arrived is kept and saved." if status == "stopped" else "Done.")
                            + (f" First fork at step {summary['fork_step']}." if summary and
                               summary.get("fork_step") is not None else ""))
        if not summary:
            return
        cols = summary.get("columns") or []
        self.totals_table.setRowCount(len(cols))
        beams = []
        for i, c in enumerate(cols):
            cells = [c.get("label") or c.get("strategy"), _fmt(c.get("total_logprob")), _fmt(c.get("perplexity")),
                     _fmt(c.get("mean_entropy")), c.get("length"), " ".join(str(c.get("text", "")).split())]
            for j, v in enumerate(cells):
                self.totals_table.setItem(i, j, table_item(v))
            for b in (c.get("beam") or {}).get("beams") or []:
                beams.append((c.get("label") or c.get("strategy"), b))
        self.beams_table.setRowCount(len(beams))
        for i, (label, b) in enumerate(beams):
            for j, v in enumerate([label, _fmt(b.get("logprob")), _fmt(b.get("score")),
                                   " ".join(str(b.get("text", "")).split())]):
                self.beams_table.setItem(i, j, table_item(v))

    def _column_traces(self, row: int) -> list[tuple[str, dict]]:
        cols = (self._summary or {}).get("columns") or []
        if not 0 <= row < len(cols) or not cols[row].get("trace"):
            return []
        return [(str(cols[row].get("label") or cols[row].get("strategy")), cols[row]["trace"])]

    def _beam_traces(self, row: int) -> list[tuple[str, dict]]:
        beams = [(c.get("label") or c.get("strategy"), b) for c in (self._summary or {}).get("columns") or []
                 for b in (c.get("beam") or {}).get("beams") or []]
        if not 0 <= row < len(beams) or not beams[row][1].get("trace"):
            return []
        return [(f"{beams[row][0]}, beam {row + 1}", beams[row][1]["trace"])]

    def open_path_in_workbench(self) -> None:
        """The path shown, token by token, in the Workbench."""
        if self._tree and self._path:
            from app.labs.decoding import BranchTree

            self.openTraceRequested.emit(BranchTree.from_dict(self._tree).path_generation(self._path[-1]))

    def _on_cell(self) -> None:
        items = self.columns_table.selectedItems()
        if not items:
            return
        k, col = items[0].row(), items[0].column()
        rec = next((s for s in self._steps if s["step"] == k and s["column"] == col), None)
        if rec is None:
            return
        alts = ", ".join(f"{visible(a.get('token', ''))} {100 * (a.get('p_raw') or 0):.1f}%"
                         for a in (rec.get("top") or [])[:6])
        self.cell_note.setText(f"{self._columns[col].get('label')} step {k}: {visible(rec.get('token') or '')} "
                               f"p_raw {_fmt(rec.get('p_raw'))}, p_final {_fmt(rec.get('p_final'))}, entropy "
                               f"{_fmt(rec.get('entropy_raw'))} nats. Alternatives: {alts}")

    def columns_data(self) -> dict[str, Any]:
        """The side-by-side grid as plain data: tokens[column][step], the fork, the totals."""
        n = len(self._columns)
        tokens: list[list[str]] = [[] for _ in range(n)]
        for s in sorted(self._steps, key=lambda s: (s["column"], s["step"])):
            tokens[s["column"]].append(s.get("token") or "")
        return {"labels": [c.get("label") for c in self._columns], "tokens": tokens, "fork": self._fork,
                "rows": self.columns_table.rowCount(), "summary": self._summary}

    # ------------------------------------------------------------------ branches
    def set_tree(self, tree: dict | None, open_node: int | None = None) -> None:
        """Show a ``BranchTree.to_dict()``: stretches of tokens between forks as tree items."""
        self._tree = tree
        self.tree_widget.clear()
        if not tree:
            return
        nodes = {n["id"]: n for n in tree["nodes"]}
        root = QTreeWidgetItem(["[prompt] " + " ".join(str(tree.get("prompt", "")).split())[:80], "", "1", ""])
        root.setData(0, Qt.UserRole, 0)
        self.tree_widget.addTopLevelItem(root)
        self._cum = {0: 1.0}

        def add_chain(parent_item: QTreeWidgetItem, first: int) -> None:
            chain = [first]
            while len(nodes[chain[-1]]["children"]) == 1:
                chain.append(nodes[chain[-1]]["children"][0])
            for nid in chain:
                n = nodes[nid]
                self._cum[nid] = self._cum[n["parent"]] * (n["p_raw"] if n["p_raw"] is not None else math.nan)
            last = nodes[chain[-1]]
            text = "".join(visible(nodes[c]["piece"]) for c in chain)
            item = QTreeWidgetItem([text, _fmt(nodes[first]["p_raw"]), _fmt(self._cum[chain[-1]]),
                                    last.get("finish_reason") or ""])
            item.setData(0, Qt.UserRole, chain[-1])
            parent_item.addChild(item)
            for child in last["children"]:
                add_chain(item, child)

        for child in nodes[0]["children"]:
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
        if not self._tree:
            return
        nodes = {n["id"]: n for n in self._tree["nodes"]}
        path = []
        nid = node_id
        while nid is not None and nid != 0:
            path.append(nid)
            nid = nodes[nid]["parent"]
        path.reverse()
        self._path = path
        t = self.path_table
        t.setRowCount(len(path))
        cum = 1.0
        for i, nid in enumerate(path):
            n = nodes[nid]
            cum *= n["p_raw"] if n["p_raw"] is not None else math.nan
            alts = ", ".join(f"{visible(a.get('token', ''))} {100 * (a.get('p_raw') or 0):.1f}%"
                             for a in (n.get("top") or [])[:5])
            for j, v in enumerate([visible(n["piece"]) + (" (chosen by you)" if n.get("forced") else ""),
                                   _fmt(n["p_raw"]), _fmt(n["p_final"]), _fmt(cum), alts]):
                t.setItem(i, j, table_item(v))
        self.path_note.setText(f"Path of {len(path)} tokens; cumulative probability {_fmt(cum)} "
                               f"(log {_fmt(math.log(cum)) if cum and cum > 0 else '–'}).")

    def _path_menu(self, pos) -> None:
        row = self.path_table.rowAt(pos.y())
        if row < 0 or not self._tree or row >= len(self._path):
            return
        menu = self.path_menu_for(row)
        menu.exec(self.path_table.viewport().mapToGlobal(pos))

    def path_menu_for(self, row: int) -> QMenu:
        """The right-click menu of the path's ``row``-th token: its alternatives (taking one
        continues from there), "Type a token…", "Generate N children here"."""
        nodes = {n["id"]: n for n in self._tree["nodes"]}
        node = nodes[self._path[row]]
        parent = node["parent"]
        menu = QMenu(self)
        for a in node.get("top") or []:
            if a.get("token") == node["piece"] and (a.get("id") is None or a["id"] == node["token_id"]):
                continue  # the token taken
            act = menu.addAction(menu_text(f"Take {visible(a.get('token', ''))!s} ({100 * (a.get('p_raw') or 0):.1f}%)"))
            if a.get("id") is None:  # a server's alternative: continued as text
                act.triggered.connect(lambda _=False, p=parent, t=str(a.get("token", "")):
                                      self.branchTextRequested.emit(p, t))
            else:
                act.triggered.connect(lambda _=False, p=parent, t=int(a["id"]): self.branchRequested.emit(p, t))
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

    def tree_data(self) -> dict | None:
        return self._tree

    # ------------------------------------------------------------------ A/B
    def show_ab(self, result: dict) -> None:
        self._ab = result
        self.ab_plot.show(result)
        agree = result.get("agreement")
        self.ab_note.setText(
            f"Compared {result.get('n_compared')} steps; agreement {_fmt(agree)}; first fork "
            f"{result.get('first_fork') if result.get('first_fork') is not None else 'none'}; mean TV "
            f"{_fmt(result.get('mean_tv'))}, mean KL(A‖B) {_fmt(result.get('mean_kl_ab'))} nats over all steps, "
            f"{_fmt(result.get('mean_tv_same_context'))} / {_fmt(result.get('mean_kl_ab_same_context'))} up to the "
            "fork (same text before). Distances use the union of both top-N lists; the mass outside is shared out.")
        self.tabs.setCurrentIndex(2)

    # ------------------------------------------------------------------ exports
    def export_data(self) -> dict[str, Any]:
        return {"lab": "decoding", "params": self.params(), "columns": list(self._columns),
                "steps": list(self._steps), "summary": self._summary, "tree": self._tree, "ab": self._ab}

    def csv_rows(self) -> tuple[list[str], list[list]]:
        header = ["column", "strategy", "step", "token", "token_id", "p_raw", "p_final", "logprob", "entropy_raw"]
        labels = {c["column"]: c.get("strategy") for c in self._columns}
        return header, [[s["column"], labels.get(s["column"]), s["step"], s.get("token"), s.get("token_id"),
                         s.get("p_raw"), s.get("p_final"), s.get("logprob"), s.get("entropy_raw")]
                        for s in self._steps]

    def current_plot(self):
        return self.ab_plot if self.tabs.currentIndex() == 2 else None
