"""The P_token vs P_task lab's view: the task, the prompt template, knobs, thresholds and plots.

Owns: ``AlignLabPanel`` — on the left the task distribution (the presets "extreme" and "flat",
or custom outcomes with probabilities in an editable table, loadable and savable as JSON), the
prompt template (``{n}``, ``{distribution}``, ``{outcomes}``), draws N, runs R, style,
temperature and seed, the verdict's thresholds (editable: the verdict is recomputed at once),
Run / Stop and a progress bar; on the right the steps-by-outcomes heatmap of P_token with the
P_task strip, the distances over the steps, P_result against P_task as bars, the verdict with
its reasons, and the model's text. It only shows and asks; ``app.labs.align._qt.presenter`` runs the jobs.

It is fed the lab's typed records (``app.labs.align.records``: ``AlignStepRecord``,
``AlignRunRecord``, ``AlignSummary``), live and reopened alike; ``results``, ``export_data`` and
``csv_rows`` give them back as plain JSON-ready values (the records' dict forms, NaN as None).

GUI thread only. Model output appears only in plain-text widgets.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.jsonsafe import json_safe
from app.core.records import plain
from app.labs.align.measures import Thresholds, verdict_from
from app.labs.align.records import AlignKnobs, AlignRunRecord, AlignStepRecord, AlignSummary
from app.labs.align.task import PRESETS, TEMPLATES, TaskDistribution, make_task
from app.labs.align._qt.plots import DistancePlot, TokenTaskHeatmap
from widgets.bar_chart import BarChart
from widgets.lab_controls import OPEN_IN_WORKBENCH, RunControls, fmt_number, plain_label

__all__ = ["AlignLabPanel"]



def _mean(values) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else math.nan


class AlignLabPanel(QWidget):
    runRequested = Signal()
    stopRequested = Signal()
    openTraceRequested = Signal(object)  # a generation record: show it in the Workbench
    loadTaskRequested = Signal()
    saveTaskRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._steps: list[AlignStepRecord] = []
        self._runs: list[AlignRunRecord] = []
        self._summary: AlignSummary | None = None
        self._task: TaskDistribution | None = None
        self._templates = dict(TEMPLATES)
        self._loading = False
        self._build()
        self.set_task(PRESETS["extreme"])

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        left = QWidget()
        ll = QVBoxLayout(left)
        tbox = QGroupBox("Task distribution P_task")
        tl = QVBoxLayout(tbox)
        prow = QHBoxLayout()
        self.preset = QComboBox()
        self.preset.addItems(["extreme", "flat", "custom"])
        self.preset.setToolTip("extreme: {1: .1, 2: .7, 3: .1, 4: .1}; flat: 1..9 at .1 each except 4 at .2 "
                               "(the paper's presets); custom: edit the table")
        prow.addWidget(QLabel("Preset"))
        prow.addWidget(self.preset, 1)
        tl.addLayout(prow)
        self.task_table = QTableWidget(0, 2)
        self.task_table.setHorizontalHeaderLabels(["outcome", "probability"])
        self.task_table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.task_table.verticalHeader().setVisible(False)
        self.task_table.setMinimumHeight(150)
        tl.addWidget(self.task_table)
        brow = QHBoxLayout()
        self.add_button = QPushButton("Add")
        self.remove_button = QPushButton("Remove")
        self.load_button = QPushButton("Load JSON…")
        self.save_button = QPushButton("Save JSON…")
        self.add_button.setToolTip("Add an empty outcome row and edit it (the preset becomes custom)")
        self.remove_button.setToolTip("Remove the selected outcome rows (the preset becomes custom)")
        self.load_button.setToolTip('Load a task from a JSON file: {"name": "...", "outcomes": {"1": 0.1, '
                                    '"2": 0.7, ...}} or {"outcomes": [["red", 0.5], ["blue", 0.5]]}')
        self.save_button.setToolTip("Save the outcomes and probabilities in the table as a JSON task file")
        for b in (self.add_button, self.remove_button, self.load_button, self.save_button):
            brow.addWidget(b)
        tl.addLayout(brow)
        self.task_note = plain_label()
        tl.addWidget(self.task_note)
        ll.addWidget(tbox)

        form = QFormLayout()
        self.draws = QSpinBox()
        self.draws.setRange(1, 1000)
        self.draws.setValue(20)
        self.draws.setToolTip("Draws N the model is asked to write in one list")
        form.addRow("Draws N", self.draws)
        self.runs = QSpinBox()
        self.runs.setRange(1, 100)
        self.runs.setValue(3)
        self.runs.setToolTip("Runs R (run r uses seed + r); diversity is measured across them")
        form.addRow("Runs R", self.runs)
        self.style = QComboBox()
        self.style.addItems(["completion", "chat"])
        self.style.setToolTip("completion: base models; chat: the model's chat template (instruct models)")
        form.addRow("Style", self.style)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 5.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(1.0)
        self.temperature.setToolTip("Which draw is taken (1 = the model's own distribution). P_token is always the "
                                    "model's raw next-token distribution, whatever this is.")
        form.addRow("Temperature", self.temperature)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Random seed of the draws, 0 to 2^31-1 (llama.cpp --seed); run r uses seed + r, "
                             "so the same seed repeats the same lists")
        form.addRow("Seed", self.seed)
        ll.addLayout(form)

        pbox = QGroupBox("Prompt template ({n} {distribution} {outcomes})")
        pl = QVBoxLayout(pbox)
        self.template_edit = QPlainTextEdit()
        self.template_edit.setMaximumHeight(120)
        pl.addWidget(self.template_edit)
        self.reset_template_button = QPushButton("Reset template")
        self.reset_template_button.setToolTip("Put back the built-in template of the chosen style "
                                              "(completion or chat), dropping your edits to it")
        pl.addWidget(self.reset_template_button, 0, Qt.AlignRight)
        ll.addWidget(pbox)

        vbox = QGroupBox("Verdict thresholds (Samplescope's heuristics, editable)")
        vf = QFormLayout(vbox)
        self.th_tv = QDoubleSpinBox()
        self.th_variability = QDoubleSpinBox()
        self.th_mass = QDoubleSpinBox()
        d = Thresholds()
        for box, value, tip in (
            (self.th_tv, d.max_mean_tv, "Close to P_task when the mean TV(P_token, P_task) is at or below this"),
            (self.th_variability, d.max_variability, "Steady when the mean TV between consecutive steps is at or "
                                                     "below this"),
            (self.th_mass, d.warn_mass_outside, "Warn when more than this share of the probability falls outside "
                                                "the outcomes")):
            box.setRange(0.0, 1.0)
            box.setSingleStep(0.05)
            box.setDecimals(2)
            box.setValue(value)
            box.setToolTip(tip)
        vf.addRow("max mean TV (E)", self.th_tv)
        vf.addRow("max variability (E)", self.th_variability)
        vf.addRow("warn mass outside", self.th_mass)
        ll.addWidget(vbox)

        self.controls = RunControls(
            [("Run", "R lists of N draws; P_token at every decision step (results saved as they arrive)")],
            "Stop at the next token; the steps so far are kept (Esc)", "decision steps")
        (self.run_button,) = self.controls.buttons_list
        self.stop_button, self.progress, self.status = (self.controls.stop_button, self.controls.progress,
                                                        self.controls.status)
        ll.addWidget(self.controls)
        ll.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(left)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(420)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)

        right = QWidget()
        rl = QVBoxLayout(right)
        self.verdict_label = plain_label("Run the lab to see where the model lands.")
        self.verdict_label.setStyleSheet("font-weight: bold;")
        rl.addWidget(self.verdict_label)
        self.reasons_label = plain_label()
        rl.addWidget(self.reasons_label)
        self.tabs = QTabWidget()
        self.heatmap = TokenTaskHeatmap()
        self.tabs.addTab(self.heatmap, "P_token heatmap")
        self.distance_plot = DistancePlot()
        self.tabs.addTab(self.distance_plot, "Distance over steps")
        self.result_chart = BarChart("P_result against P_task", horizontal=False, value_label="probability")
        self.tabs.addTab(self.result_chart, "P_result")
        self.text_view = QPlainTextEdit()
        self.text_view.setReadOnly(True)
        self.text_view.setPlaceholderText("The model's lists appear here, one run per block.")
        self.tabs.addTab(self.text_view, "Text")
        rl.addWidget(self.tabs, 1)
        orow = QHBoxLayout()
        self.trace_run = QComboBox()
        self.trace_run.setToolTip("A run of the last lab run")
        self.open_trace_button = QPushButton(OPEN_IN_WORKBENCH)
        self.open_trace_button.setToolTip("Show the chosen run token by token in the Workbench: the distribution "
                                          "at every step, each sampler stage, the entropy")
        self.open_trace_button.clicked.connect(self._open_run)
        orow.addWidget(self.trace_run)
        orow.addWidget(self.open_trace_button)
        orow.addStretch(1)
        rl.addLayout(orow)
        self._refresh_trace_runs()
        self.figures_label = plain_label()
        rl.addWidget(self.figures_label)

        split = QSplitter(Qt.Horizontal)
        split.addWidget(scroll)
        split.addWidget(right)
        split.setSizes([430, 850])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)

        self.preset.currentTextChanged.connect(self._on_preset)
        self.task_table.itemChanged.connect(self._on_table_edit)
        self.add_button.clicked.connect(self._add_row)
        self.remove_button.clicked.connect(self._remove_rows)
        self.load_button.clicked.connect(self.loadTaskRequested)
        self.save_button.clicked.connect(self.saveTaskRequested)
        self.style.currentIndexChanged.connect(self._show_template)
        self.template_edit.textChanged.connect(self._template_edited)
        self.reset_template_button.clicked.connect(self._reset_template)
        for box in (self.th_tv, self.th_variability, self.th_mass):
            box.valueChanged.connect(self._update_verdict)
        self.run_button.clicked.connect(self.runRequested)
        self.stop_button.clicked.connect(self.stopRequested)
        self._show_template()

    # ------------------------------------------------------------------ task and template
    def set_task(self, task: TaskDistribution) -> None:
        self._loading = True
        t = self.task_table
        t.setRowCount(0)
        for o, p in zip(task.outcomes, task.probabilities):
            r = t.rowCount()
            t.insertRow(r)
            t.setItem(r, 0, QTableWidgetItem(o))
            t.setItem(r, 1, QTableWidgetItem(f"{p:g}"))
        self._loading = False
        preset = task.name if task.name in PRESETS and PRESETS[task.name] == task else "custom"
        self.preset.blockSignals(True)
        self.preset.setCurrentText(preset)
        self.preset.blockSignals(False)
        self.task_note.setText("; ".join(task.notes))

    def task(self) -> TaskDistribution:
        """The task of the table; ``TaskError`` (a ValueError) saying what to fix."""
        if self.preset.currentText() in PRESETS:
            return PRESETS[self.preset.currentText()]
        pairs = []
        t = self.task_table
        for r in range(t.rowCount()):
            o = t.item(r, 0).text().strip() if t.item(r, 0) else ""
            p = t.item(r, 1).text().strip() if t.item(r, 1) else ""
            if not o and not p:
                continue
            try:
                value = float(p.rstrip("%")) if p else math.nan
            except ValueError:
                raise ValueError(f"row {r + 1}: the probability {p!r} is not a number") from None
            pairs.append((o, value))
        return make_task("custom", pairs)

    def _on_preset(self, name: str) -> None:
        if name in PRESETS:
            self.set_task(PRESETS[name])

    def _on_table_edit(self, *args) -> None:
        if not self._loading and self.preset.currentText() != "custom":
            self.preset.blockSignals(True)
            self.preset.setCurrentText("custom")
            self.preset.blockSignals(False)

    def _add_row(self) -> None:
        self.preset.setCurrentText("custom")
        r = self.task_table.rowCount()
        self.task_table.insertRow(r)
        self.task_table.setItem(r, 0, QTableWidgetItem(""))
        self.task_table.setItem(r, 1, QTableWidgetItem(""))
        self.task_table.editItem(self.task_table.item(r, 0))

    def _remove_rows(self) -> None:
        self.preset.setCurrentText("custom")
        for r in sorted({i.row() for i in self.task_table.selectedIndexes()}, reverse=True):
            self.task_table.removeRow(r)

    def template(self) -> str:
        return self._templates[self.style.currentText()]

    def _show_template(self, *args) -> None:
        self._loading = True
        self.template_edit.setPlainText(self._templates[self.style.currentText()])
        self._loading = False

    def _template_edited(self) -> None:
        if not self._loading:
            self._templates[self.style.currentText()] = self.template_edit.toPlainText()

    def _reset_template(self) -> None:
        self._templates[self.style.currentText()] = TEMPLATES[self.style.currentText()]
        self._show_template()

    def thresholds(self) -> Thresholds:
        return Thresholds(self.th_tv.value(), self.th_variability.value(), self.th_mass.value())

    def params(self) -> AlignKnobs:
        """The knobs as they are set (the task and the sampler settings are the presenter's to add)."""
        return AlignKnobs(self.draws.value(), self.runs.value(), self.style.currentText(), self.temperature.value(),
                          self.seed.value(), self.template(), self.thresholds())

    # ------------------------------------------------------------------ running
    def set_running(self, running: bool, total: int = 0) -> None:
        self.controls.set_running(running, total)

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    def _refresh_trace_runs(self) -> None:
        self.trace_run.clear()
        for r in getattr(self, "_runs", []):
            if r.trace:
                self.trace_run.addItem(f"run {r.run + 1} (seed {r.seed})", r.run)
        self.open_trace_button.setEnabled(self.trace_run.count() > 0)

    def _open_run(self) -> None:
        run = self.trace_run.currentData()
        rec = next((r for r in self._runs if r.run == run and r.trace), None)
        if rec is not None:
            self.openTraceRequested.emit(rec.trace)

    def start_results(self, task: TaskDistribution) -> None:
        self._task = task
        self._steps, self._runs, self._summary = [], [], None
        self._refresh_trace_runs()
        self.text_view.clear()
        self.verdict_label.setText("Running…")
        self.reasons_label.setText("")
        self.figures_label.setText("")
        self._redraw()

    def add_record(self, rec: AlignStepRecord | AlignRunRecord) -> None:
        if isinstance(rec, AlignStepRecord):
            self._steps.append(rec)
            self.progress.setValue(min(len(self._steps), self.progress.maximum()))
        elif isinstance(rec, AlignRunRecord):
            self._runs.append(rec)
            self.text_view.appendPlainText(f"run {rec.run + 1} (seed {rec.seed}, {rec.finish_reason}):\n{rec.text}\n")
            self._refresh_trace_runs()
        self._redraw()

    def show_summary(self, summary: AlignSummary | None, status: str) -> None:
        self.set_running(False)
        self.progress.setRange(0, max(1, len(self._steps)))
        self.progress.setValue(len(self._steps))
        self._summary = summary
        self.status.setText(("Stopped: the steps so far are kept and saved." if status == "stopped" else "Done.")
                            + f" {len(self._steps)} decision steps in {len(self._runs)} run(s).")
        self._redraw()

    def show_error(self, message: str) -> None:
        self.set_running(False)
        self.status.setText(message)

    # ------------------------------------------------------------------ views
    def _redraw(self) -> None:
        task = self._task
        if task is None:
            return
        n = len(task.outcomes)
        matrix = np.array([list(s.p_token) or [math.nan] * n for s in self._steps], dtype=np.float64).reshape(-1, n)
        self.heatmap.show(task.outcomes, task.probabilities, matrix, [s.drawn for s in self._steps])
        self.distance_plot.show(self._steps)
        counts = np.zeros(n)
        index = {o: i for i, o in enumerate(task.outcomes)}
        for r in self._runs:
            for d in r.draws:
                if d in index:
                    counts[index[d]] += 1
        series = {"P_task": list(task.probabilities)}
        if counts.sum():
            series["P_result"] = (counts / counts.sum()).tolist()
        self.result_chart.set_data(list(task.outcomes), series)
        self._update_verdict()

    def figures(self) -> dict[str, float]:
        """The pooled figures over every step so far (as ``align_measures.verdict`` pools them)."""
        steps = self._steps
        return {"mean_tv": _mean(s.tv for s in steps), "variability": _mean(s.tv_prev for s in steps),
                "mass": _mean(s.mass_outside for s in steps), "mean_kl": _mean(s.kl for s in steps),
                "mean_js": _mean(s.js for s in steps), "mean_max_prob": _mean(s.max_prob for s in steps),
                "mean_entropy": _mean(s.entropy for s in steps)}

    def _update_verdict(self, *args) -> None:
        if not self._steps:
            return
        f = self.figures()
        v = verdict_from(f["mean_tv"], f["variability"], f["mass"], self.thresholds())
        estimated = any(s.estimated for s in self._steps)
        self.verdict_label.setText(f"Verdict: {v.label}" + ("  (estimated from top-N log-probabilities)"
                                                            if estimated else ""))
        self.reasons_label.setText("\n".join(v.reasons))
        div = self._summary.diversity_across_runs if self._summary is not None else None
        self.figures_label.setText(
            f"Means over {len(self._steps)} steps: KL {fmt_number(f['mean_kl'])} nats, JS {fmt_number(f['mean_js'])}, TV "
            f"{fmt_number(f['mean_tv'])}, variability {fmt_number(f['variability'])}, max-probability "
            f"{fmt_number(f['mean_max_prob'])}, entropy {fmt_number(f['mean_entropy'])} nats, mass outside {fmt_number(f['mass'])}"
            + (f"; diversity across runs (Hamming) {fmt_number(div)}" if div is not None else ""))

    def export_data(self) -> dict[str, Any]:
        """The knobs, the task, the records and the summary as plain JSON-ready values."""
        return json_safe({"lab": "p-token-vs-p-task", "params": plain(self.params()),
                          "task": self._task.to_dict() if self._task else None, **self._plain_results()})

    def _plain_results(self) -> dict[str, Any]:
        """The records and the summary in their dict forms, NaN as None."""
        return json_safe({"steps": [s.to_dict() for s in self._steps], "runs": [r.to_dict() for r in self._runs],
                          "summary": plain(self._summary)})

    def csv_rows(self) -> tuple[list[str], list[list]]:
        outcomes = list(self._task.outcomes) if self._task else []
        header = (["run", "step", "drawn"] + [f"p_token[{o}]" for o in outcomes]
                  + ["mass_outside", "kl", "js", "tv", "tv_prev", "max_prob", "entropy", "estimated"])
        rows = []
        for s in self._steps:
            p = list(s.p_token) or [None] * len(outcomes)
            rows.append(json_safe([s.run, s.step, s.drawn, *p, s.mass_outside, s.kl, s.js, s.tv, s.tv_prev,
                                   s.max_prob, s.entropy, s.estimated]))
        return header, rows

    def current_plot(self):
        return {0: self.heatmap, 1: self.distance_plot, 2: self.result_chart}.get(self.tabs.currentIndex())

    def results(self) -> dict[str, Any]:
        return {**self._plain_results(), "heatmap": self.heatmap.data(), "distance": self.distance_plot.data(),
                "result_chart": self.result_chart.data(), "verdict": self.verdict_label.text()}
