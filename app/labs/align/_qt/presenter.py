"""The P_token vs P_task lab in the window: joins ``AlignLabPanel`` to the lab runner.

Owns: ``AlignLab`` — reads the panel's task, template, knobs and thresholds, checks them, builds
the job body (R lists of N draws with P_token at every decision step, ``iter_align``) and hands
it to ``controller.labs`` (the "lab-worker" thread) with the run's ``AlignParams``; feeds the
typed records and the summary (``app.labs.align.records``) back to the panel, and a reopened run
the same way (read through ``RECORDS``); loads and saves custom tasks as JSON. GUI thread; the
job body runs on the lab worker and touches only the lab's own backend.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import replace

from PySide6.QtWidgets import QFileDialog

from app.labs.align.task import TaskError, render_prompt, task_from_json
from app.labs.align.engine import DEFAULT_SETTINGS, default_max_tokens, iter_align
from app.labs.align.records import RECORDS, AlignParams
from app.core.paths import atomic_write_text
from app.lab_presenter import LabPresenter
from app.labs.align._qt.panel import AlignLabPanel

__all__ = ["AlignLab", "KIND"]

KIND = "align"


class AlignLab(LabPresenter):
    KIND = KIND

    def __init__(self, panel: AlignLabPanel, controller, settings_provider=None) -> None:
        super().__init__(panel, controller)
        panel.runRequested.connect(self.run)
        panel.stopRequested.connect(self.stop)
        panel.loadTaskRequested.connect(lambda: self.load_task())
        panel.saveTaskRequested.connect(lambda: self.save_task())

    def run(self) -> None:
        source = self.source()
        if source is None:
            return
        try:
            task = self.panel.task()
            p = self.panel.params()  # the thresholds are checked here
            render_prompt(task, p.draws, p.style, p.template)  # a bad template is refused now
        except (TaskError, ValueError) as exc:
            self.panel.show_status(str(exc))
            return
        settings = replace(DEFAULT_SETTINGS, temperature=p.temperature)
        labs = self.labs

        def body(cancel: threading.Event):
            backend = labs.engine(source)
            if not source.capabilities.local and backend.server_capabilities() is None:
                backend.probe()  # once per lab backend: top-N and which knobs the server takes
            return (yield from iter_align(backend, task, p.draws, p.runs, settings, p.seed,
                                          style=p.style, template=p.template, cancel=cancel,
                                          max_tokens=default_max_tokens(p.draws), thresholds=p.thresholds,
                                          max_parallel=source.max_parallel))

        self.panel.start_results(task)
        params = AlignParams.of(p, task, settings)
        # progress: about one decision step per draw
        self.start("run", f"P_token vs P_task ({task.name}, N={p.draws}, R={p.runs})", params, body, source,
                   p.draws * p.runs)

    def replay(self, exp) -> None:
        """A stored run, typed (the window reads it through ``RECORDS``; a run straight from the
        store, with dicts, is read here the same way): its task, then its records and summary."""
        if isinstance(exp.params, Mapping):
            exp = RECORDS.read_experiment(exp)
        task = exp.params.task.distribution()
        self.panel.set_task(task)
        self.panel.start_results(task)
        super().replay(exp)

    # ------------------------------------------------------------------ task files
    def load_task(self, path: str | None = None) -> bool:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self.panel, "Load task", "", "JSON (*.json);;All files (*)")
            if not path:
                return False
        try:
            task = task_from_json(path)
        except (TaskError, ValueError, OSError) as exc:
            self.panel.show_status(f"Not loaded: {exc}")
            return False
        self.panel.set_task(task)
        self.panel.show_status(f"Loaded the task {task.name!r} ({len(task.outcomes)} outcomes).")
        return True

    def save_task(self, path: str | None = None) -> str | None:
        try:
            task = self.panel.task()
        except (TaskError, ValueError) as exc:
            self.panel.show_status(f"Not saved: {exc}")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self.panel, "Save task", f"{task.name}.json", "JSON (*.json)")
            if not path:
                return None
        try:
            atomic_write_text(path, json.dumps(task.to_dict(), ensure_ascii=False, indent=1) + "\n")
        except OSError as exc:
            self.panel.show_status(f"Not saved: {exc}")
            return None
        self.panel.show_status(f"Saved {path}")
        return path
