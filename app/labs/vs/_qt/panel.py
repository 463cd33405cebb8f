"""The Verbalized Sampling lab's view: knobs, the editable request template, and its charts.

Owns: ``VSLabPanel`` — method, k, tails t, post-filter tau, style, N, answer budgets and the
reference on the left; the first turn of the request as an editable template (with ``{prompt}``
where the prompt goes) and the follow-up of multi-turn methods; Run once / Compare / Stop and
a progress bar; on the right three tabs: "Answer" (stated probabilities beside the model's own
probabilities of each candidate, the KL between them, the raw answer), "Comparison" (VS/Direct
ratio of each metric, the metrics table, one row per run) and "Reference" (answers against the
reference distribution). The panel only shows and asks: it emits ``runOnceRequested`` /
``compareRequested`` / ``stopRequested`` and is fed records and summaries by ``app.labs.vs._qt.presenter``.
The knobs it gives (``params``: ``VSKnobs``) and the records and summaries it shows
(``VSRunRecord``, ``VSSummary``) are the lab's typed values (``app.labs.vs.records``), live and
reopened alike; ``results``, ``export_data`` and ``csv_rows`` give them back as plain data (the
records' dict forms).

GUI thread only. Model output appears only in plain-text widgets (table items, a read-only
QPlainTextEdit, axis labels drawn as plain text).

Over 500 lines on purpose: one panel (knobs, tables, plots) of one lab; its parts share the
panel's record replay.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
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
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core import metrics
from app.core.records import plain
from app.labs.vs.prompts import METHODS, MULTI_TURN_METHODS, VS_METHODS, default_template, request_from_template
from app.labs.vs.records import VSKnobs, VSRunRecord, VSSummary
from widgets.bar_chart import BarChart
from widgets.lab_controls import OPEN_IN_WORKBENCH, fmt_number, offer_traces, table_item

__all__ = ["VSLabPanel", "REFERENCES", "RATIO_METRICS", "DEFAULT_PROMPT"]

DEFAULT_PROMPT = "Name a US state."
#: reference distributions offered for enumerable questions: label -> key (None = no reference)
REFERENCES = {"None": None, "US states (RedPajama frequencies)": "us-states"}
#: metrics whose VS/Direct ratio is plotted, with their labels (higher = more diverse, except
#: lexical similarity, where lower is more diverse)
RATIO_METRICS = (
    ("semantic_diversity", "semantic diversity"),
    ("lexical_similarity", "lexical similarity (lower = more diverse)"),
    ("distinct_1", "distinct-1"),
    ("distinct_2", "distinct-2"),
    ("distinct_3", "distinct-3"),
    ("precision", "precision"),
    ("coverage_n", "coverage-N"),
)
TABLE_METRICS = (("n_samples", "samples"),) + RATIO_METRICS[:5] + (
    ("parse_failure_rate", "parse-failure rate"), ("precision", "precision"), ("coverage_n", "coverage-N"),
    ("kl_to_reference", "KL to reference (nats)"))
HISTOGRAM_TOP = 20
REDRAW_MS = 200
#: the columns of ``csv_rows``
CSV_COLUMNS = ("arm", "run", "seed", "drawn", "error", "candidates", "stated_probabilities", "seconds", "interrupted")

#: the figures of this lab: three significant digits, large values without decimals
_fmt = partial(fmt_number, fixed_from=1000)


class VSLabPanel(QWidget):
    runOnceRequested = Signal()
    compareRequested = Signal()
    stopRequested = Signal()
    openTraceRequested = Signal(object)  # a generation record: show it in the Workbench

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._records: list[VSRunRecord] = []
        self._summary: VSSummary | None = None
        self._reference: dict[str, float] | None = None
        self._expected_runs = 0
        self._template_edited = False
        self._setting_template = False
        self._dirty = False
        self._build()
        self._reset_template()
        self._timer = QTimer(self)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)
        self._timer.start()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        form_box = QWidget()
        form_outer = QVBoxLayout(form_box)
        form = QFormLayout()
        self.prompt_edit = QPlainTextEdit(DEFAULT_PROMPT)
        self.prompt_edit.setMaximumHeight(64)
        self.prompt_edit.setToolTip("The task. It replaces {prompt} in the request template below.")
        form.addRow("Prompt", self.prompt_edit)
        self.method = QComboBox()
        self.method.addItems(METHODS)
        self.method.setCurrentText("VS-Standard")
        self.method.setToolTip(
            "Direct: ask once. Sequence: k answers in one reply. Multi-turn: k answers over k turns.\n"
            "VS-Standard: k answers, each with the probability the model states for it.\n"
            "VS-CoT: the same after a short reasoning field. VS-Multi: VS over several turns.")
        form.addRow("Method", self.method)
        self.k = QSpinBox()
        self.k.setRange(1, 20)
        self.k.setValue(5)
        self.k.setToolTip("How many candidates one VS answer lists (the paper uses 5)")
        form.addRow("k candidates", self.k)
        self.t_on = QCheckBox("tails t")
        self.t_on.setToolTip("Adds an instruction to the prompt: every stated probability must be below t")
        self.t = QDoubleSpinBox()
        self.t.setRange(0.01, 1.0)
        self.t.setSingleStep(0.05)
        self.t.setDecimals(2)
        self.t.setValue(0.10)
        self.t.setToolTip("The tail bound t, 0.01 to 1: with 'tails t' on, the prompt asks that every stated "
                          "probability be below t (the paper's VS tail sampling)")
        self.t.setEnabled(False)
        form.addRow(self.t_on, self.t)
        self.tau_on = QCheckBox("post-filter tau")
        self.tau_on.setToolTip("After the answer is read, keep only candidates with stated p >= tau before "
                               "drawing one (off by default; not part of the prompt)")
        self.tau = QDoubleSpinBox()
        self.tau.setRange(0.0, 1.0)
        self.tau.setSingleStep(0.05)
        self.tau.setDecimals(2)
        self.tau.setValue(0.10)
        self.tau.setToolTip("The threshold tau, 0 to 1: with 'post-filter tau' on, candidates whose stated "
                            "probability is below tau are dropped before one is drawn")
        self.tau.setEnabled(False)
        form.addRow(self.tau_on, self.tau)
        self.style = QComboBox()
        self.style.addItems(["completion", "chat"])
        self.style.setToolTip("completion: one text that ends where the answer begins (base models such as "
                              "the embedded Gemma 3 270M); chat: system and user messages (instruct models)")
        form.addRow("Style", self.style)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(16, 4096)
        self.max_tokens.setValue(256)
        self.max_tokens.setToolTip("Token budget of one answer of the chosen method (JSON with k candidates "
                                   "needs roughly 30 tokens per candidate)")
        form.addRow("Max tokens", self.max_tokens)
        self.direct_max_tokens = QSpinBox()
        self.direct_max_tokens.setRange(1, 4096)
        self.direct_max_tokens.setValue(24)
        self.direct_max_tokens.setToolTip("Token budget of a Direct answer in a comparison: a base model may "
                                          "ramble past the answer, which only costs time")
        form.addRow("Direct max tokens", self.direct_max_tokens)
        self.n_runs = QSpinBox()
        self.n_runs.setRange(1, 1000)
        self.n_runs.setValue(30)
        self.n_runs.setToolTip("Runs per arm in a comparison (Direct N times, the method N times)")
        form.addRow("N runs", self.n_runs)
        self.reference = QComboBox()
        self.reference.addItems(list(REFERENCES))
        self.reference.setCurrentIndex(1)
        self.reference.setToolTip("For enumerable questions: precision, coverage-N and KL of the answers "
                                  "against this reference distribution")
        form.addRow("Reference", self.reference)
        self.sampler_note = QLabel("")
        self.sampler_note.setTextFormat(Qt.PlainText)
        self.sampler_note.setWordWrap(True)
        self.sampler_note.setStyleSheet("color: #555;")
        form.addRow("Sampler", self.sampler_note)
        form_outer.addLayout(form)

        buttons = QHBoxLayout()
        self.run_once_button = QPushButton("Run once")
        self.run_once_button.setToolTip("One answer of the chosen method, its stated distribution and, for a "
                                        "local model, what the model itself gives each candidate (Ctrl+Shift+R)")
        self.compare_button = QPushButton("Compare")
        self.compare_button.setToolTip("Direct against the chosen method, N runs each, with the paper's "
                                       "metrics; results are saved as they arrive (Ctrl+Shift+Enter)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop at the next token; finished runs are kept (Esc)")
        self.stop_button.setEnabled(False)
        for b in (self.run_once_button, self.compare_button, self.stop_button):
            buttons.addWidget(b)
        form_outer.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m runs")
        self.progress.setValue(0)
        form_outer.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setTextFormat(Qt.PlainText)
        self.status.setWordWrap(True)
        form_outer.addWidget(self.status)

        tbox = QGroupBox("Request template (first turn; {prompt} = the prompt)")
        tl = QVBoxLayout(tbox)
        self.template_edit = QPlainTextEdit()
        self.template_edit.setToolTip("Exactly what is sent, with {prompt} for the prompt. Chat style: each "
                                      "message starts with a line [system], [user] or [assistant].")
        self.template_edit.setMinimumHeight(150)
        tl.addWidget(self.template_edit)
        fl = QHBoxLayout()
        self.follow_up_label = QLabel("Follow-up")
        self.follow_up_edit = QLineEdit()
        self.follow_up_edit.setToolTip("Sent after each turn of a multi-turn method to ask for more answers")
        fl.addWidget(self.follow_up_label)
        fl.addWidget(self.follow_up_edit, 1)
        tl.addLayout(fl)
        rl = QHBoxLayout()
        self.template_state = QLabel("")
        self.template_state.setTextFormat(Qt.PlainText)
        self.reset_template_button = QPushButton("Reset template")
        self.reset_template_button.setToolTip("Back to the method's own template for these settings")
        rl.addWidget(self.template_state, 1)
        rl.addWidget(self.reset_template_button)
        tl.addLayout(rl)
        form_outer.addWidget(tbox, 1)

        scroll = QScrollArea()
        scroll.setWidget(form_box)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(460)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)

        # ---- results
        self.tabs = QTabWidget()
        answer = QWidget()
        al = QVBoxLayout(answer)
        self.answer_chart = BarChart("What the model says vs what it does", value_label="probability")
        self.answer_chart.setToolTip("Stated: the probability the answer gives each candidate. Model: the "
                                     "model's own probability of each candidate text as a continuation of the "
                                     "Direct prompt, renormalised over the candidates (local models only).")
        al.addWidget(self.answer_chart, 3)
        self.answer_note = QLabel("Run once to see one answer's candidates.")
        self.answer_note.setTextFormat(Qt.PlainText)
        self.answer_note.setWordWrap(True)
        al.addWidget(self.answer_note)
        self.raw_view = QPlainTextEdit()
        self.raw_view.setReadOnly(True)
        self.raw_view.setPlaceholderText("The raw answer appears here.")
        self.raw_view.setMaximumHeight(130)
        al.addWidget(self.raw_view, 1)
        self.open_answer_button = QPushButton(OPEN_IN_WORKBENCH)
        self.open_answer_button.setToolTip("Show this answer token by token in the Workbench: the distribution at "
                                           "every step, each sampler stage (the grammar stage included), the entropy")
        self.open_answer_button.setEnabled(False)
        self.open_answer_button.clicked.connect(self._open_answer)
        al.addWidget(self.open_answer_button, 0, Qt.AlignLeft)
        self.tabs.addTab(answer, "Answer")

        comp = QWidget()
        cl = QVBoxLayout(comp)
        self.ratio_chart = BarChart("VS / Direct ratio per metric", value_label="ratio (1 = same as Direct)")
        cl.addWidget(self.ratio_chart, 3)
        self.metrics_table = QTableWidget(0, 4)
        self.metrics_table.setHorizontalHeaderLabels(["metric", "Direct", "VS", "VS / Direct"])
        self.metrics_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Stretch)
        self.metrics_table.verticalHeader().setVisible(False)
        cl.addWidget(self.metrics_table, 2)
        self.runs_table = QTableWidget(0, 5)
        self.runs_table.setHorizontalHeaderLabels(["arm", "run", "drawn answer", "candidates / problem", "s"])
        self.runs_table.horizontalHeader().setSectionResizeMode(3, QHeaderView.Stretch)
        self.runs_table.verticalHeader().setVisible(False)
        offer_traces(self.runs_table, self._traces_of_row, self.openTraceRequested.emit)
        cl.addWidget(self.runs_table, 2)
        self.tabs.addTab(comp, "Comparison")

        ref = QWidget()
        rl2 = QVBoxLayout(ref)
        self.histogram = BarChart("Answers against the reference", value_label="share of valid answers")
        rl2.addWidget(self.histogram, 1)
        self.reference_note = QLabel("")
        self.reference_note.setTextFormat(Qt.PlainText)
        self.reference_note.setWordWrap(True)
        rl2.addWidget(self.reference_note)
        self.tabs.addTab(ref, "Reference")

        split = QSplitter(Qt.Horizontal)
        split.addWidget(scroll)
        split.addWidget(self.tabs)
        split.setSizes([470, 800])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)

        self.t_on.toggled.connect(self.t.setEnabled)
        self.tau_on.toggled.connect(self.tau.setEnabled)
        for w in (self.method, self.style):
            w.currentIndexChanged.connect(self._knobs_changed)
        for w in (self.k, self.t):
            w.valueChanged.connect(self._knobs_changed)
        self.t_on.toggled.connect(self._knobs_changed)
        self.template_edit.textChanged.connect(self._template_changed)
        self.follow_up_edit.textChanged.connect(self._template_changed)
        self.reset_template_button.clicked.connect(self._reset_template)
        self.run_once_button.clicked.connect(self.runOnceRequested)
        self.compare_button.clicked.connect(self.compareRequested)
        self.stop_button.clicked.connect(self.stopRequested)

    # ------------------------------------------------------------------ knobs and template
    def params(self) -> VSKnobs:
        """The knobs (stored with the lab run; no secrets)."""
        return VSKnobs(
            prompt=self.prompt_edit.toPlainText().strip(), method=self.method.currentText(),
            k=self.k.value(), t=self.t.value() if self.t_on.isChecked() else None,
            tau=self.tau.value() if self.tau_on.isChecked() else None, style=self.style.currentText(),
            n=self.n_runs.value(), max_tokens=self.max_tokens.value(),
            direct_max_tokens=self.direct_max_tokens.value(),
            reference=REFERENCES[self.reference.currentText()],
            template=self.template_edit.toPlainText(), follow_up=self.follow_up_edit.text(),
            template_edited=self._template_edited,
        )

    def request(self, method: str | None = None):
        """The ``VSRequest`` that will be sent for ``method`` (default: the chosen one), from the
        template when it is that method's. ValueError says what is wrong (empty prompt, no
        ``{prompt}`` in the template, ...)."""
        p = self.params()
        method = method or p.method
        t = p.t if method in VS_METHODS else None
        if method != p.method:  # e.g. the Direct arm of a comparison: its own default template
            tpl, fu = default_template(method, p.k, t, p.style)
            return request_from_template(method, p.prompt, p.k, t, p.style, tpl, fu)
        return request_from_template(method, p.prompt, p.k, t, p.style, p.template,
                                     p.follow_up if method in MULTI_TURN_METHODS else None)

    def _knobs_changed(self, *args) -> None:
        if not self._template_edited:
            self._reset_template()
        else:
            self.template_state.setText("Edited template kept (Reset template to follow the knobs).")

    def _reset_template(self) -> None:
        p = self.params()
        t = p.t if p.method in VS_METHODS else None
        tpl, fu = default_template(p.method, p.k, t, p.style)
        self._setting_template = True
        self.template_edit.setPlainText(tpl)
        self.follow_up_edit.setText(fu)
        self._setting_template = False
        multi = p.method in MULTI_TURN_METHODS
        self.follow_up_edit.setVisible(multi)
        self.follow_up_label.setVisible(multi)
        self._template_edited = False
        self.template_state.setText(f"The {p.method} template ({p.style} style).")

    def _template_changed(self) -> None:
        if not self._setting_template:
            self._template_edited = True
            self.template_state.setText("Edited template (Reset template to go back).")

    def set_sampler_note(self, text: str) -> None:
        self.sampler_note.setText(text)

    def set_model_does_available(self, available: bool, reason: str = "") -> None:
        """'What the model does' needs the model's logits (local models); say why when not."""
        self._model_does_reason = "" if available else reason

    # ------------------------------------------------------------------ running state
    def set_running(self, running: bool, expected_runs: int = 0) -> None:
        self.run_once_button.setEnabled(not running)
        self.compare_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        if running:
            self._expected_runs = expected_runs
            self.progress.setRange(0, max(1, expected_runs))
            self.progress.setValue(0)
            self.status.setText("Running…")

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    def start_results(self, kind: str, reference: dict[str, float] | None) -> None:
        """Clear the results of the previous run before a new one (``kind`` "once" or "compare")."""
        self._records = []
        self._summary = None
        self._reference = reference
        self._kind = kind
        if kind == "compare":
            self.runs_table.setRowCount(0)
            self.metrics_table.setRowCount(0)
            self.ratio_chart.clear()
            self.histogram.clear()
            self.reference_note.setText("")
            self.tabs.setCurrentIndex(1)
        else:
            self.tabs.setCurrentIndex(0)
        self._dirty = True

    def add_record(self, record: VSRunRecord) -> None:
        """One run's record as it arrives (from the lab worker, via the GUI thread)."""
        self._records.append(record)
        if getattr(self, "_kind", "compare") == "compare":
            self._append_run_row(record)
        else:
            self._show_answer(record)
        done = sum(1 for r in self._records if r.counted)
        self.progress.setValue(min(done, self.progress.maximum()))
        self._dirty = True

    def show_summary(self, summary: VSSummary | None, status: str) -> None:
        """The run's end: a comparison's ``VSSummary``, None after a single run (or a run cut
        before it had one)."""
        self._summary = summary
        self.set_running(False)
        n = sum(1 for r in self._records if r.counted)
        if status == "stopped":
            self.status.setText(f"Stopped: {n} finished run(s) kept and saved.")
        elif status == "done":
            self.status.setText(f"Done: {n} run(s).")
        if summary is not None:
            self._fill_metrics(summary)
        self._dirty = True

    def show_error(self, message: str) -> None:
        self.set_running(False)
        self.status.setText(message)

    # ------------------------------------------------------------------ result views
    def _append_run_row(self, r: VSRunRecord) -> None:
        row = self.runs_table.rowCount()
        self.runs_table.insertRow(row)
        if r.interrupted:
            drawn, detail = "(stopped mid-answer)", "not counted"
        elif r.error:
            drawn, detail = "—", f"parse failure: {r.error}"
        else:
            drawn = r.drawn or "—"
            detail = "; ".join(f"{c.text} ({c.probability:.2f})" for c in r.candidates) if r.candidates else r.raw
        cells = [r.arm, str(r.run + 1), drawn, detail, f"{r.seconds:.1f}"]
        for col, text in enumerate(cells):
            self.runs_table.setItem(row, col, table_item(text))
        self.runs_table.scrollToBottom()

    def _traces_of_row(self, row: int) -> list[tuple[str, dict]]:
        """The generations of the run shown in row ``row`` (one per turn)."""
        if not 0 <= row < len(self._records):
            return []
        r = self._records[row]
        name = f"{r.arm} run {r.run + 1}"
        return [(f"{name}, turn {i + 1}" if len(r.traces) > 1 else name, t) for i, t in enumerate(r.traces)]

    def _open_answer(self) -> None:
        if self._records and self._records[-1].traces:
            self.openTraceRequested.emit(self._records[-1].traces[0])

    def _show_answer(self, r: VSRunRecord) -> None:
        self.raw_view.setPlainText(r.raw)
        self.open_answer_button.setEnabled(bool(r.traces))
        if r.interrupted:
            self.answer_note.setText("Stopped mid-answer: the partial answer is kept below.")
            self.answer_chart.clear()
            return
        if r.error:
            self.answer_note.setText(f"The answer could not be read: {r.error}")
            self.answer_chart.clear()
            return
        series = {"stated": list(r.probabilities)}
        lines = []
        if r.model is not None:
            series["model"] = list(r.model.probabilities)
            lines.append(f"KL(stated ‖ model) = {_fmt(r.model.kl_stated_to_model)} nats over the "
                         f"{len(r.candidates)} candidates.")
        elif getattr(self, "_model_does_reason", ""):
            lines.append(self._model_does_reason)
        self.answer_chart.set_data(list(r.texts), series)
        if r.drawn is not None:
            lines.append(f"Drawn (seed {r.seed}): {r.drawn}")
        lines += list(r.notes) + [f"Repaired: {x}" for x in r.repairs]
        lines += [f"Problem: {x}" for x in r.problems]
        self.answer_note.setText("\n".join(lines))

    def _fill_metrics(self, summary: VSSummary) -> None:
        d, v, ratios = summary.direct, summary.vs, summary.ratios
        rows = [(label, d.get(key), v.get(key), ratios.get(key)) for key, label in TABLE_METRICS
                if key in d or key in v]
        self.metrics_table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            for col, value in enumerate(row):
                self.metrics_table.setItem(i, col, table_item(value if col == 0 else _fmt(value)))
        cats, vals = [], []
        for key, label in RATIO_METRICS:
            if key in ratios:
                cats.append(label)
                value = ratios[key]
                vals.append(math.nan if value is None else float(value))
        self.ratio_chart.set_data(cats, {f"{summary.method} / Direct": vals}, reference=1.0)
        if summary.notes:
            self.status.setText(self.status.text() + "\n" + "\n".join(summary.notes))

    def _samples(self, arm: str) -> list[str]:
        return [s for r in self._records if r.arm == arm and r.counted for s in r.samples]

    def _redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        if self._reference and getattr(self, "_kind", "") == "compare":
            self._draw_histogram()

    def _draw_histogram(self) -> None:
        ref = self._reference
        direct, vs = self._samples("direct"), self._samples("vs")
        dd = metrics.answer_distribution(direct, ref.keys())
        vd = metrics.answer_distribution(vs, ref.keys())
        total = sum(ref.values()) or 1.0
        names = list(ref)[:HISTOGRAM_TOP]
        names += [n for n in ref if n not in names and (dd[n] > 0 or vd[n] > 0)]
        self.histogram.set_data(names, {"reference": [ref[n] / total for n in names],
                                        "Direct": [dd[n] for n in names], "VS": [vd[n] for n in names]})
        parts = []
        for arm, samples in (("Direct", direct), ("VS", vs)):
            if samples:
                parts.append(f"{arm}: precision {_fmt(metrics.precision(samples, ref.keys()))}, coverage-N "
                             f"{_fmt(metrics.coverage_n(samples, ref.keys()))}, KL to reference "
                             f"{_fmt(metrics.kl_to_reference(samples, ref))} nats ({len(samples)} answers)")
        self.reference_note.setText("\n".join(parts) + f"\nShown: the {HISTOGRAM_TOP} most frequent states in "
                                    "the reference and every other state that was answered.")

    # ------------------------------------------------------------------ data for tests and exports
    def export_data(self) -> dict[str, Any]:
        """Plain JSON-ready data: the knobs, the records and summary as their dict forms."""
        return {"lab": "verbalized-sampling", "params": plain(self.params()), "records": plain(self._records),
                "summary": plain(self._summary)}

    def csv_rows(self) -> tuple[list[str], list[list]]:
        rows = [[r.arm, r.run + 1, r.seed, r.drawn, r.error, " | ".join(r.texts),
                 " | ".join(f"{q:.4f}" for q in r.probabilities), r.seconds, r.interrupted] for r in self._records]
        return list(CSV_COLUMNS), rows

    def current_plot(self):
        return (self.answer_chart, self.ratio_chart, self.histogram)[max(0, self.tabs.currentIndex())]

    def results(self) -> dict[str, Any]:
        """The lab's current results as plain data (the records and summary as their dict forms, the
        charts' data)."""
        self._redraw()
        return {"records": plain(self._records), "summary": plain(self._summary),
                "answer_chart": self.answer_chart.data(), "ratio_chart": self.ratio_chart.data(),
                "histogram": self.histogram.data()}
