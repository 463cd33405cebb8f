"""The sampled-vs-ideal shift lab's view: concepts, templates, knobs, results and plots.

Over 500 lines on purpose: one panel (knobs, tables, plots) of one lab; its parts share the
panel's record replay.

Owns: ``ShiftLabPanel`` — on the left the concept set (an editable table with import/export
as CSV and a reset to the built-in set), the three question templates of the chosen style
(editable), the mode (sampled / exact), samples, temperature, the exact method's mass
threshold, Run / Stop and a progress bar; on the right the results table (concept, A, I, S,
alpha_hat, kept or why dropped), the selected concept's distribution of S with A, I and mean S
marked, the across-concept scatter with the fitted line and r, the summary (fraction with
alpha_hat > 0 and the exact binomial p-values), the table of runs of several models
(``ModelRun`` rows), and the glubbing sub-lab (synthetic concepts swept over the mean; the
sample against the average per valence). It only shows and asks: ``app.labs.shift._qt.presenter``
runs the jobs and feeds records back. The knobs it gives (``params``, ``glub_params``) and the
records and summaries it shows are the lab's typed values (``app.labs.shift.records``), live and
reopened alike; ``results``, ``export_data`` and ``csv_rows`` give them back as plain data
(the records' dict forms).

GUI thread only. Model answers appear only in plain-text widgets (table items, labels set as
plain text).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.records import plain
from app.labs.shift.concepts import BUILTIN_CONCEPTS, KINDS, TEMPLATES, Concept, slugify
from app.labs.shift.records import QUESTIONS, ConceptRecord, GlubRecord, GlubSummary, GlubSweep, RunKnobs, \
    ShiftRunSummary
from widgets.lab_controls import RunControls, fmt_number, offer_traces, plain_label, table_item
from app.labs.shift._qt.plots import GlubPlot, ShiftScatterPlot, ValueDistributionPlot

__all__ = ["ShiftLabPanel", "ModelRun", "CONCEPT_COLUMNS", "RESULT_COLUMNS"]

CONCEPT_COLUMNS = ("id", "domain", "name", "unit", "question")
RESULT_COLUMNS = ("concept", "domain", "A", "I", "S", "alpha_hat", "kept / why dropped")
MODEL_COLUMNS = ("model", "mode", "concepts used", "alpha_hat > 0", "p one-sided", "p two-sided", "r", "when")
#: the columns of ``csv_rows`` (the keys of the records' dict forms)
GLUB_CSV_COLUMNS = ("valence", "mean", "spread", "shape", "n_examples", "average", "ideal", "S", "shift")
CONCEPT_CSV_COLUMNS = ("concept_id", "name", "domain", "unit", "mode", "A", "I", "S", "alpha", "alpha_hat", "kept",
                       "reason")


class ModelRun(NamedTuple):
    """One row of the table of models: a finished concept-set run's summary, the model's name
    and when the run was made (ISO time)."""

    summary: ShiftRunSummary
    model: str
    created_at: str


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


class ShiftLabPanel(QWidget):
    runRequested = Signal()
    glubRequested = Signal()
    stopRequested = Signal()
    importRequested = Signal()
    exportRequested = Signal()
    refreshModelsRequested = Signal()
    openTraceRequested = Signal(object)  # a generation record: show it in the Workbench

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._kind = "concepts"  # what the results show: "concepts" or "glub"
        self._records: list[ConceptRecord] = []
        self._glub_records: list[GlubRecord] = []
        self._summary: ShiftRunSummary | None = None
        self._templates: dict[tuple[str, str], str] = dict(TEMPLATES)
        self._loading_template = False
        self._build()
        self.set_concepts(BUILTIN_CONCEPTS)
        self._show_template()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        left = QWidget()
        ll = QVBoxLayout(left)
        cbox = QGroupBox("Concepts (edit cells; one row per concept)")
        cl = QVBoxLayout(cbox)
        self.concept_table = QTableWidget(0, len(CONCEPT_COLUMNS))
        self.concept_table.setHorizontalHeaderLabels(list(CONCEPT_COLUMNS))
        self.concept_table.horizontalHeader().setSectionResizeMode(QHeaderView.Interactive)
        self.concept_table.horizontalHeader().setStretchLastSection(True)
        self.concept_table.verticalHeader().setVisible(False)
        self.concept_table.setMinimumHeight(180)
        cl.addWidget(self.concept_table)
        row = QHBoxLayout()
        self.add_button = QPushButton("Add")
        self.remove_button = QPushButton("Remove")
        self.add_button.setToolTip("Add an empty concept row and edit its name (fill in the unit and question too)")
        self.remove_button.setToolTip("Remove the selected concept rows")
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip("Read concepts from a CSV file (id,domain,name,unit,question,notes)")
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Write the table as CSV")
        self.builtin_button = QPushButton("Built-in")
        self.builtin_button.setToolTip("Back to the 48 built-in concepts over 8 domains")
        for b in (self.add_button, self.remove_button, self.import_button, self.export_button, self.builtin_button):
            row.addWidget(b)
        cl.addLayout(row)
        ll.addWidget(cbox, 2)

        form = QFormLayout()
        self.limit = QSpinBox()
        self.limit.setRange(0, 10000)
        self.limit.setValue(8)
        self.limit.setSpecialValueText("all")
        self.limit.setToolTip("Run only the first N concepts of the table (0 = all)")
        form.addRow("Concepts to run", self.limit)
        self.mode = QComboBox()
        self.mode.addItems(["exact", "sampled"])
        self.mode.setToolTip("exact: the probability of every numeric answer from the token tree (local models; "
                             "no sampling noise)\nsampled: N answers per question, each in a fresh context")
        form.addRow("Mode", self.mode)
        self.samples = QSpinBox()
        self.samples.setRange(1, 1000)
        self.samples.setValue(10)
        self.samples.setToolTip("Sampled mode: answers per question (A, I and S are each the mean of N answers)")
        form.addRow("Samples N", self.samples)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 5.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(0.8)
        self.temperature.setToolTip("Sampling temperature of the answers (the paper: 0.8); top-k, top-p and min-p "
                                    "are off. The exact method uses the same distribution.")
        form.addRow("Temperature", self.temperature)
        self.min_mass = QDoubleSpinBox()
        self.min_mass.setDecimals(4)
        self.min_mass.setRange(0.0001, 0.1)
        self.min_mass.setSingleStep(0.0005)
        self.min_mass.setValue(0.001)
        self.min_mass.setToolTip("Exact mode: branches of the token tree below this probability are not expanded; "
                                 "their mass is reported as not covered")
        form.addRow("Exact: prune below", self.min_mass)
        self.style = QComboBox()
        self.style.addItems(["completion", "chat"])
        self.style.setToolTip("completion: a text that ends where the number begins (base models); chat: one user "
                              "message (instruct models)")
        form.addRow("Style", self.style)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setValue(0)
        self.seed.setToolTip("Random seed of the sampled answers, 0 to 2^31-1 (llama.cpp --seed); each answer "
                             "gets its own seed counted up from this one, so the same seed repeats a run. "
                             "The exact mode does not draw.")
        form.addRow("Seed", self.seed)
        ll.addLayout(form)

        tbox = QGroupBox("Question templates ({name} {question} {unit} {domain})")
        tl = QVBoxLayout(tbox)
        trow = QHBoxLayout()
        self.template_kind = QComboBox()
        self.template_kind.addItems(list(KINDS))
        self.template_kind.setToolTip("Which of the three questions to edit below: average (on average, what is "
                                      "it?), ideal (what should it be?) or sample (the first number that comes to "
                                      "mind); each style (completion, chat) has its own")
        self.reset_templates_button = QPushButton("Reset templates")
        self.reset_templates_button.setToolTip("Put back the built-in templates of all three questions in both "
                                               "styles, dropping your edits")
        trow.addWidget(QLabel("Question"))
        trow.addWidget(self.template_kind, 1)
        trow.addWidget(self.reset_templates_button)
        tl.addLayout(trow)
        self.template_edit = QPlainTextEdit()
        self.template_edit.setMaximumHeight(90)
        tl.addWidget(self.template_edit)
        ll.addWidget(tbox)

        self.controls = RunControls(
            [("Run", "Ask every concept's three questions; results are saved as they arrive")],
            "Stop after the current node or answer; finished concepts are kept (Esc)", "concepts")
        (self.run_button,) = self.controls.buttons_list
        self.stop_button, self.progress, self.status = (self.controls.stop_button, self.controls.progress,
                                                        self.controls.status)
        ll.addWidget(self.controls)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(470)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)

        # ---- results
        self.tabs = QTabWidget()
        res = QWidget()
        rl = QVBoxLayout(res)
        self.summary_label = plain_label("Run the lab to see A, I and S per concept.")
        rl.addWidget(self.summary_label)
        self.results_table = QTableWidget(0, len(RESULT_COLUMNS))
        self.results_table.setHorizontalHeaderLabels(list(RESULT_COLUMNS))
        self.results_table.horizontalHeader().setSectionResizeMode(len(RESULT_COLUMNS) - 1, QHeaderView.Stretch)
        self.results_table.verticalHeader().setVisible(False)
        self.results_table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.results_table.setSelectionMode(QAbstractItemView.SingleSelection)
        offer_traces(self.results_table, self._answer_traces, self.openTraceRequested.emit)
        rl.addWidget(self.results_table, 2)
        self.distribution_plot = ValueDistributionPlot()
        rl.addWidget(self.distribution_plot, 3)
        self.answers_view = QPlainTextEdit()
        self.answers_view.setReadOnly(True)
        self.answers_view.setMaximumHeight(110)
        self.answers_view.setPlaceholderText("Select a concept to see its raw answers.")
        rl.addWidget(self.answers_view)
        self.tabs.addTab(res, "Concepts")
        self.scatter_plot = ShiftScatterPlot()
        self.tabs.addTab(self.scatter_plot, "Across concepts")

        models = QWidget()
        ml = QVBoxLayout(models)
        ml.addWidget(QLabel("Finished shift-lab runs in the run store, one row per run (as in the paper's table)."))
        self.models_table = QTableWidget(0, len(MODEL_COLUMNS))
        self.models_table.setHorizontalHeaderLabels(list(MODEL_COLUMNS))
        self.models_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        self.models_table.verticalHeader().setVisible(False)
        ml.addWidget(self.models_table)
        self.refresh_models_button = QPushButton("Refresh")
        self.refresh_models_button.setToolTip("Read the finished shift-lab runs from the run store again")
        ml.addWidget(self.refresh_models_button, 0, Qt.AlignLeft)
        self.tabs.addTab(models, "Models")

        glub = QWidget()
        gl = QVBoxLayout(glub)
        gform = QFormLayout()
        self.glub_sweep = QComboBox()
        self.glub_sweep.addItems(["mean", "ideal"])
        self.glub_sweep.setToolTip("mean: the shown values' mean moves, for each valence\nideal: the grades peak "
                                   "at the swept value (never stated in the prompt); the mean stays")
        gform.addRow("Sweep over", self.glub_sweep)
        self.glub_means = QLineEdit("45, 145, 345")
        self.glub_means.setToolTip("The swept values (comma-separated): means, or ideals")
        gform.addRow("Values", self.glub_means)
        self.glub_base_mean = QDoubleSpinBox()
        self.glub_base_mean.setRange(0, 100000)
        self.glub_base_mean.setValue(45)
        self.glub_base_mean.setToolTip("The shown values' mean while the ideal is swept")
        gform.addRow("Mean (ideal sweep)", self.glub_base_mean)
        self.glub_valences = QLineEdit("positive, negative, control")
        self.glub_valences.setToolTip("Valences of a mean sweep (an ideal sweep grades toward the ideal)")
        gform.addRow("Valences", self.glub_valences)
        self.glub_examples = QSpinBox()
        self.glub_examples.setRange(5, 400)
        self.glub_examples.setValue(100)
        self.glub_examples.setToolTip("Values shown in the prompt, each with its grade (the paper: 100)")
        gform.addRow("Shown examples", self.glub_examples)
        self.glub_bimodal = QCheckBox("bimodal values")
        self.glub_bimodal.setToolTip("Draw the shown values from two bumps 3 spreads apart with the dip at the "
                                     "mean (same overall mean) instead of one normal bump")
        gform.addRow("", self.glub_bimodal)
        gl.addLayout(gform)
        self.glub_button = QPushButton("Run glubbing sweep")
        self.glub_button.setToolTip("Synthetic concepts ('glubbing', a made-up hobby): does the sample move toward "
                                    "the graded ideal? Uses the mode, temperature and seed on the left.")
        gl.addWidget(self.glub_button, 0, Qt.AlignLeft)
        self.glub_plot = GlubPlot()
        gl.addWidget(self.glub_plot, 1)
        self.glub_note = plain_label()
        gl.addWidget(self.glub_note)
        self.tabs.addTab(glub, "Glubbing")

        split = QSplitter(Qt.Horizontal)
        split.addWidget(scroll)
        split.addWidget(self.tabs)
        split.setSizes([480, 800])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)

        self.add_button.clicked.connect(self._add_row)
        self.remove_button.clicked.connect(self._remove_rows)
        self.builtin_button.clicked.connect(lambda: self.set_concepts(BUILTIN_CONCEPTS))
        self.import_button.clicked.connect(self.importRequested)
        self.export_button.clicked.connect(self.exportRequested)
        self.template_kind.currentIndexChanged.connect(self._show_template)
        self.style.currentIndexChanged.connect(self._show_template)
        self.template_edit.textChanged.connect(self._template_edited)
        self.reset_templates_button.clicked.connect(self._reset_templates)
        self.run_button.clicked.connect(self.runRequested)
        self.glub_button.clicked.connect(self.glubRequested)
        self.stop_button.clicked.connect(self.stopRequested)
        self.refresh_models_button.clicked.connect(self.refreshModelsRequested)
        self.results_table.itemSelectionChanged.connect(self._on_select)

    # ------------------------------------------------------------------ concepts and templates
    def set_concepts(self, concepts) -> None:
        t = self.concept_table
        t.setRowCount(0)
        for c in concepts:
            r = t.rowCount()
            t.insertRow(r)
            for col, key in enumerate(CONCEPT_COLUMNS):
                t.setItem(r, col, table_item(getattr(c, key), editable=True))

    def concepts(self) -> tuple[list[Concept], list[str]]:
        """The table's concepts and the problems of rows that cannot be used (no name, a
        duplicate id); rows with problems are left out."""
        out, problems, seen = [], [], set()
        t = self.concept_table
        for r in range(t.rowCount()):
            cell = {key: (t.item(r, col).text().strip() if t.item(r, col) else "")
                    for col, key in enumerate(CONCEPT_COLUMNS)}
            if not cell["name"]:
                if any(cell.values()):
                    problems.append(f"row {r + 1}: no name")
                continue
            cid = cell["id"] or slugify(cell["name"])
            if cid in seen:
                problems.append(f"row {r + 1}: the id {cid!r} is used twice")
                continue
            seen.add(cid)
            out.append(Concept(cid, cell["domain"] or "general", cell["name"], cell["unit"] or "units",
                               cell["question"] or f"the {cell['name']}"))
        return out, problems

    def _add_row(self) -> None:
        t = self.concept_table
        r = t.rowCount()
        t.insertRow(r)
        for col in range(len(CONCEPT_COLUMNS)):
            t.setItem(r, col, table_item("", editable=True))
        t.setCurrentCell(r, 2)
        t.editItem(t.item(r, 2))

    def _remove_rows(self) -> None:
        rows = sorted({i.row() for i in self.concept_table.selectedIndexes()}, reverse=True)
        for r in rows:
            self.concept_table.removeRow(r)

    def templates(self) -> dict[tuple[str, str], str]:
        return dict(self._templates)

    def _show_template(self, *args) -> None:
        self._loading_template = True
        self.template_edit.setPlainText(self._templates[(self.template_kind.currentText(), self.style.currentText())])
        self._loading_template = False

    def _template_edited(self) -> None:
        if not self._loading_template:
            self._templates[(self.template_kind.currentText(), self.style.currentText())] = \
                self.template_edit.toPlainText()

    def _reset_templates(self) -> None:
        self._templates = dict(TEMPLATES)
        self._show_template()

    def params(self) -> RunKnobs:
        return RunKnobs(mode=self.mode.currentText(), samples=self.samples.value(),
                        temperature=self.temperature.value(), min_mass=self.min_mass.value(),
                        style=self.style.currentText(), seed=self.seed.value(), limit=self.limit.value(),
                        templates={f"{k}/{s}": v for (k, s), v in self._templates.items()})

    def glub_params(self) -> GlubSweep:
        """The sweep's knobs; ValueError for an unreadable mean or an unknown valence."""
        try:
            means = [float(x) for x in self.glub_means.text().replace(";", ",").split(",") if x.strip()]
        except ValueError:
            raise ValueError("Means: write numbers separated by commas, e.g. 45, 145, 345") from None
        valences = [v.strip() for v in self.glub_valences.text().split(",") if v.strip()]
        bad = [v for v in valences if v not in ("positive", "negative", "control")]
        sweep = self.glub_sweep.currentText()
        if not means or (sweep == "mean" and (bad or not valences)):
            raise ValueError("Valences: positive, negative and/or control; at least one value to sweep")
        return GlubSweep(sweep=sweep, means=tuple(means), valences=tuple(valences) if sweep == "mean" else ("peaked",),
                         base_mean=self.glub_base_mean.value(), n_examples=self.glub_examples.value(),
                         shape="bimodal" if self.glub_bimodal.isChecked() else "unimodal")

    def set_exact_available(self, available: bool, reason: str = "") -> None:
        """The exact method needs the model's logits (local models)."""
        idx = self.mode.findText("exact")
        item = self.mode.model().item(idx)
        item.setEnabled(available)
        item.setToolTip("" if available else reason)
        if not available and self.mode.currentText() == "exact":
            self.mode.setCurrentText("sampled")

    # ------------------------------------------------------------------ running
    def set_running(self, running: bool, total: int = 0) -> None:
        self.controls.set_running(running, total)
        self.glub_button.setEnabled(not running)

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    def start_results(self, kind: str) -> None:
        self._kind = kind
        self.controls.set_unit("conditions" if kind == "glub" else "concepts")
        if kind == "glub":
            self._glub_records = []
            self.glub_note.setText("")
            self.tabs.setCurrentIndex(3)
        else:
            self._records = []
            self._summary = None
            self.results_table.setRowCount(0)
            self.summary_label.setText("Running…")
            self.tabs.setCurrentIndex(0)

    def _answer_traces(self, row: int) -> list[tuple[str, dict]]:
        """The sampled answers of the concept in ``row`` (A, I and S), each a generation."""
        if not 0 <= row < len(self._records):
            return []
        return [(f"{q} answer {i + 1}: {' '.join(a.raw.split())[:40]}", a.trace)
                for q, i, a in self._records[row].all_answers() if a.trace]

    def add_record(self, rec: ConceptRecord | GlubRecord) -> None:
        """One record of the run shown: a ``GlubRecord`` in a glubbing sweep, else a ``ConceptRecord``."""
        if isinstance(rec, GlubRecord):
            self._glub_records.append(rec)
            self._draw_glub()
        else:
            self._records.append(rec)
            self._append_result_row(rec)
            self._draw_scatter()
            if self.results_table.rowCount() == 1:
                self.results_table.selectRow(0)
        self.progress.setValue(min(self.progress.value() + 1, self.progress.maximum()))

    def show_summary(self, summary: ShiftRunSummary | GlubSummary | None, status: str) -> None:
        """The run's end: a ``GlubSummary`` after a glubbing sweep, a ``ShiftRunSummary`` after a
        concept set, None when the run kept none."""
        self.set_running(False)
        n = len(self._glub_records) if self._kind == "glub" else len(self._records)
        self.status.setText(("Stopped: " if status == "stopped" else "Done: ") + f"{n} result(s) kept and saved.")
        if isinstance(summary, GlubSummary):
            shifts = ", ".join(f"{v}: {s:+.3g}" for v, s in summary.mean_shift.items())
            self.glub_note.setText(f"Mean shift of S from the shown average, by valence: {shifts or '–'}. "
                                   "The paper reports positive valence shifting up, negative down, control near 0.")
            return
        if self._kind == "glub":
            return
        self._summary = summary
        if summary is not None:
            self._show_summary_text(summary)
            self._draw_scatter()

    def show_error(self, message: str) -> None:
        self.set_running(False)
        self.status.setText(message)

    # ------------------------------------------------------------------ views
    def _show_summary_text(self, s: ShiftRunSummary) -> None:
        reasons: dict[str, int] = {}
        for d in s.dropped:
            key = d.reason.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        why = "; ".join(f"{k}: {v}" for k, v in reasons.items())
        self.summary_label.setText(
            f"{s.n_used} of {s.n_total} concepts used"
            + (f" (dropped — {why})" if why else "")
            + f". alpha_hat > 0 for {s.n_positive} of {s.n_used}"
            + (f" ({100 * s.fraction:.1f}%)" if _finite(s.fraction) else "")
            + f"; exact binomial test against 50%: p = {fmt_number(s.p_one_sided)} one-sided, "
            f"{fmt_number(s.p_two_sided)} two-sided. Mean alpha_hat {fmt_number(s.mean_alpha_hat)}, "
            f"median {fmt_number(s.median_alpha_hat)}; r(S − A, I − A) = {fmt_number(s.r)}.")

    def _append_result_row(self, r: ConceptRecord) -> None:
        row = self.results_table.rowCount()
        self.results_table.insertRow(row)
        kept = "kept" if r.kept else (r.reason or "dropped")
        if r.interrupted:
            kept = "stopped mid-concept (not counted)"
        cells = [r.name, r.domain, fmt_number(r.A), fmt_number(r.I), fmt_number(r.S), fmt_number(r.alpha_hat), kept]
        for col, text in enumerate(cells):
            self.results_table.setItem(row, col, table_item(text))

    def _on_select(self) -> None:
        rows = {i.row() for i in self.results_table.selectedIndexes()}
        if rows:
            self.show_concept(min(rows))

    def show_concept(self, index: int) -> None:
        """Draw the distribution of S of the ``index``-th result, and list its raw answers."""
        if not 0 <= index < len(self._records):
            return
        r = self._records[index]
        exact = r.S_exact
        lines = []
        if exact is not None:
            self.distribution_plot.show_concept(r.name, A=r.A, I=r.I, S=r.S, values=exact.values, probs=exact.probs,
                                                unit=r.unit)
            for q, label in QUESTIONS:
                d = r.exact(q)
                if d is None:
                    lines.append(f"{label}: not measured")
                    continue
                lines.append(f"{label}: mean {fmt_number(d.mean)}; numeric answers cover {fmt_number(d.covered)} "
                             f"of the probability, not a number {fmt_number(d.not_number)}, pruned "
                             f"{fmt_number(d.pruned)} ({d.nodes} tree nodes)")
        else:
            values = [a.value for a in r.answers("S") if a.value is not None]
            self.distribution_plot.show_concept(r.name, A=r.A, I=r.I, S=r.S, values=values, unit=r.unit)
            for q, label in QUESTIONS:
                for a in r.answers(q):
                    got = fmt_number(a.value) if a.value is not None else f"[{a.error}]"
                    lines.append(f"{label}: {got} ← {a.raw!r}")
        self.answers_view.setPlainText("\n".join(lines))

    def _draw_scatter(self) -> None:
        points = [(r.name, xy) for r in self._records if (xy := r.offsets) is not None]
        s = self._summary
        self.scatter_plot.show_points([x for _n, (x, _y) in points], [y for _n, (_x, y) in points],
                                      [name for name, _xy in points], None if s is None else s.slope,
                                      None if s is None else s.intercept, None if s is None else s.r)

    def _draw_glub(self) -> None:
        """Sample against the shown average (mean sweep) or against the graded ideal (ideal sweep)."""
        series: dict[str, tuple[list, list]] = {}
        ideal_sweep = any(r.valence == "peaked" for r in self._glub_records)
        for r in self._glub_records:
            if r.S is None:
                continue
            name = "graded toward the ideal" if r.valence == "peaked" else r.valence
            xs, ys = series.setdefault(name, ([], []))
            xs.append(r.ideal if ideal_sweep else r.average)
            ys.append(r.S)
        self.glub_plot.show_conditions(series, x_label="ideal (where the grades peak)" if ideal_sweep
                                       else "average of the shown values")

    def show_models(self, rows: Sequence[ModelRun]) -> None:
        """The table of finished concept-set runs, one row per run."""
        t = self.models_table
        t.setRowCount(len(rows))
        for i, (s, model, created_at) in enumerate(rows):
            cells = [model, s.mode, f"{s.n_used} of {s.n_total}",
                     f"{100 * s.fraction:.1f}%" if _finite(s.fraction) else "–",
                     fmt_number(s.p_one_sided), fmt_number(s.p_two_sided), fmt_number(s.r),
                     created_at[:16].replace("T", " ")]
            for col, text in enumerate(cells):
                t.setItem(i, col, table_item(text))

    # ------------------------------------------------------------------ data for tests and exports
    def export_data(self) -> dict[str, Any]:
        """Plain JSON-ready data: the knobs, the records and summary as their dict forms."""
        return {"lab": "sampled-vs-ideal", "params": plain(self.params()), "records": plain(self._records),
                "summary": plain(self._summary), "glub_records": plain(self._glub_records)}

    def csv_rows(self) -> tuple[list[str], list[list]]:
        if self._kind == "glub" or (not self._records and self._glub_records):
            return list(GLUB_CSV_COLUMNS), [[g.valence, g.mean, g.spread, g.shape, g.n_examples, g.average, g.ideal,
                                             g.S, g.shift] for g in self._glub_records]
        return list(CONCEPT_CSV_COLUMNS), [[r.concept_id, r.name, r.domain, r.unit, r.mode, r.A, r.I, r.S, r.alpha,
                                            r.alpha_hat, r.kept, r.reason] for r in self._records]

    def current_plot(self):
        return {0: self.distribution_plot, 1: self.scatter_plot, 3: self.glub_plot}.get(self.tabs.currentIndex())

    def results(self) -> dict[str, Any]:
        """What is shown, for tests: the records and summary as their dict forms, the plots' data."""
        return {"records": plain(self._records), "summary": plain(self._summary),
                "glub_records": plain(self._glub_records),
                "distribution": self.distribution_plot.data(), "scatter": self.scatter_plot.data(),
                "glub": self.glub_plot.data()}
