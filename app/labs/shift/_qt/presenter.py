"""The sampled-vs-ideal shift lab in the window: joins ``ShiftLabPanel`` to the lab runner.

Owns: ``ShiftLab`` — reads the panel's concepts, templates and knobs, checks them, builds the
job bodies (a concept-set run, a glubbing sweep) and hands them to ``controller.labs`` (the
"lab-worker" thread); feeds records, summaries and errors back to the panel; CSV import and
export of the concept set; the table of finished runs per model from the run store (their
stored summaries read as ``ShiftRunSummary``). Params, records and summaries are the lab's
typed values (``app.labs.shift.records``): ``ShiftParams`` / ``GlubParams`` go to the runner,
the engines' records and summaries come back to the panel as they are, and a stored run is
read through ``RECORDS`` by the run's kind. GUI thread; the job bodies run on the lab worker
and touch only the lab's engine.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace

from PySide6.QtWidgets import QFileDialog

from app.core.records import RecordError
from app.labs.shift.engine import SAMPLE_SETTINGS, iter_glub, iter_shift
from app.labs.shift.glubbing import GlubSpec, sweep
from app.labs.shift.concepts import ConceptFileError, concepts_from_csv, concepts_to_csv, render
from app.labs.shift.records import RECORDS, GlubParams, ShiftParams, ShiftRunSummary
from app.lab_presenter import LabPresenter
from app.labs.shift._qt.panel import ModelRun, ShiftLabPanel

__all__ = ["ShiftLab", "KIND", "make_engine"]


def make_engine(source):
    """The shift lab's engine for a ``LabSource`` (lab worker; the registry's ``LabSpec.engine``)."""
    from app.labs.shift.engine import LocalShiftEngine, RemoteShiftEngine

    if source.local:
        return LocalShiftEngine(source.open(), max_parallel=source.max_parallel)
    return RemoteShiftEngine(source.open(), max_parallel=source.max_parallel)

KIND = "shift"


class ShiftLab(LabPresenter):
    KIND = KIND

    def __init__(self, panel: ShiftLabPanel, controller, settings_provider=None) -> None:
        super().__init__(panel, controller)
        panel.runRequested.connect(self.run)
        panel.glubRequested.connect(self.run_glub)
        panel.stopRequested.connect(self.stop)
        panel.importRequested.connect(lambda: self.import_csv())
        panel.exportRequested.connect(lambda: self.export_csv())
        panel.refreshModelsRequested.connect(self.refresh_models)
        self.refresh_models()

    # ------------------------------------------------------------------ starting
    def _prepare(self):
        source = self.source()
        if source is None:
            return None
        caps = source.capabilities
        self.panel.set_exact_available(caps.full_logits, "The exact method (the probability of every digit) "
                                       + caps.why_not("full_logits") + ".")
        p = self.panel.params()
        settings = replace(SAMPLE_SETTINGS, temperature=p.temperature)
        return source, settings, p

    def run(self) -> None:
        ready = self._prepare()
        if ready is None:
            return
        source, settings, p = ready
        concepts, problems = self.panel.concepts()
        if p.limit:
            concepts = concepts[: p.limit]
        if not concepts:
            self.panel.show_status("No concept to run: add rows to the table or reset to the built-in set.")
            return
        templates = self.panel.templates()
        try:  # a bad template is refused before anything runs
            for kind in ("average", "ideal", "sample"):
                render(concepts[0], kind, p.style, templates)
        except ValueError as exc:
            self.panel.show_status(f"Template: {exc}")
            return
        labs = self.labs

        def body(cancel: threading.Event):
            engine = labs.engine(source, "shift")
            return (yield from iter_shift(engine, concepts, mode=p.mode, samples=p.samples, settings=settings,
                                          seed=p.seed, style=p.style, templates=templates,
                                          min_mass=p.min_mass, cancel=cancel))

        if problems:
            self.panel.show_status("Rows left out: " + "; ".join(problems))
        params = ShiftParams.of(p, concepts, settings)
        self._start("concepts", f"Shift ({p.mode}): {len(concepts)} concepts", params, body, source,
                    len(concepts))

    def run_glub(self) -> None:
        ready = self._prepare()
        if ready is None:
            return
        source, settings, p = ready
        try:
            g = self.panel.glub_params()
            if g.sweep == "ideal":
                base = GlubSpec(mean=g.base_mean, n_examples=g.n_examples, shape=g.shape, seed=p.seed)
                specs = sweep("ideal", g.means, base)
            else:
                specs = [GlubSpec(valence=v, mean=m, n_examples=g.n_examples, shape=g.shape, seed=p.seed)
                         for v in g.valences for m in g.means]
        except ValueError as exc:
            self.panel.show_status(str(exc))
            return
        labs = self.labs

        def body(cancel: threading.Event):
            engine = labs.engine(source, "shift")
            return (yield from iter_glub(engine, specs, mode=p.mode, samples=p.samples, settings=settings,
                                         seed=p.seed, style=p.style, min_mass=p.min_mass, cancel=cancel))

        self._start("glub", f"Glubbing ({p.mode}): {len(specs)} conditions", GlubParams.of(p, g), body, source,
                    len(specs))

    def _start(self, kind: str, title: str, params: ShiftParams | GlubParams, body, source, total: int) -> None:
        self.panel.start_results(kind)
        self.start(kind, title, params, body, source, total, kind=KIND if kind == "concepts" else "glub")

    def replay(self, exp) -> None:
        """A stored run, typed (the window reads it through ``RECORDS``; a run straight from the
        store, with dicts, is read here the same way), into the results of its kind."""
        if isinstance(exp.params, Mapping):
            exp = RECORDS.read_experiment(exp)
        self.panel.start_results("glub" if exp.kind == "glub" else "concepts")
        super().replay(exp)

    def on_finished(self, what: str, summary, status: str) -> None:
        self.panel.show_summary(summary, status)
        writer = getattr(self.controller, "writer", None)
        if writer is None:
            self.refresh_models()
        else:  # the run's end is written by the store-writer thread, in order: refresh once it is
            writer.submit(lambda store: None, on_done=lambda _result: self.refresh_models())

    def refresh_models(self) -> None:
        """The table of finished shift runs (one row per run, newest first); a run whose summary
        cannot be read (written by a newer version, damaged) is left out."""
        store = self.controller.store
        if store is None:
            return
        rows = []
        try:
            for e in store.list_experiments(KIND, limit=50):
                if e.status not in ("done", "stopped"):
                    continue
                exp = store.load_experiment(e.id)
                if not exp.summary:
                    continue
                try:
                    summary = ShiftRunSummary.from_dict(exp.summary)
                except RecordError:
                    continue
                rows.append(ModelRun(summary, exp.model_name, exp.created_at))
        except Exception as exc:  # noqa: BLE001 - the table is a convenience
            self.panel.show_status(f"The run store could not be read: {exc}")
            return
        self.panel.show_models(rows)

    # ------------------------------------------------------------------ CSV
    def import_csv(self, path: str | None = None) -> bool:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self.panel, "Import concepts", "", "CSV (*.csv);;All files (*)")
            if not path:
                return False
        try:
            concepts, problems = concepts_from_csv(path)
        except (ConceptFileError, OSError, UnicodeDecodeError) as exc:
            self.panel.show_status(f"Not imported: {exc}")
            return False
        if not concepts:
            self.panel.show_status("Not imported: the file has no usable concept. " + "; ".join(problems))
            return False
        self.panel.set_concepts(concepts)
        self.panel.show_status(f"Imported {len(concepts)} concepts." + (" Problems: " + "; ".join(problems)
                                                                          if problems else ""))
        return True

    def export_csv(self, path: str | None = None) -> str | None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self.panel, "Export concepts", "concepts.csv", "CSV (*.csv)")
            if not path:
                return None
        concepts, _problems = self.panel.concepts()
        try:
            concepts_to_csv(concepts, path)
        except OSError as exc:
            self.panel.show_status(f"Not exported: {exc}")
            return None
        self.panel.show_status(f"Exported {len(concepts)} concepts to {path}")
        return path
