"""The part every lab's presenter shares: one job at a time through the lab runner.

Owns: ``LabPresenter`` — the base of ``VSLab``, ``ShiftLab``, ``AlignLab`` and ``DecodingLab``.
It asks the controller for the model to use (``source``), starts a job on the lab runner and
remembers that the job is its own (``start``; ``running``; ``stop``), and routes the runner's
signals back: records and the summary to the subclass's hooks (by default the panel's
``add_record`` / ``show_summary``), a failure to the panel's ``show_error`` (the window shows
the message itself). Records of another lab's job are ignored. GUI thread.

A lab panel offers: ``show_status(text)``, ``show_error(text)``, ``set_running(bool, total)``,
``add_record(record)``, ``show_summary(summary, status)``; records, params and summaries are the
lab's typed values (``app.core.records.Record``), live and reopened alike: a reopened run
arrives read through the lab's ``RecordTypes`` (the window does that).
"""

from __future__ import annotations

from PySide6.QtCore import QObject

__all__ = ["LabPresenter"]


class LabPresenter(QObject):
    #: the store's kind of this lab's runs
    KIND = "lab"

    def __init__(self, panel, controller) -> None:
        super().__init__(panel)
        self.panel = panel
        self.controller = controller
        self.labs = controller.labs
        self._mine: str | None = None  # what this presenter's running job does, or None
        self.labs.record.connect(self._on_record)
        self.labs.finished.connect(self._on_finished)
        self.labs.failed.connect(self._on_failed)

    def source(self):
        """The model to use, or None after telling the user what is missing."""
        source, reason = self.controller.lab_source()
        if source is None:
            self.panel.show_status(reason)
        return source

    def start(self, what: str, title: str, params: dict, body, source, total: int, *, kind: str | None = None) -> bool:
        """Run ``body`` on the lab worker as this lab's job ``what`` (stored as ``kind``, default
        ``KIND``); False if it could not start (another lab run is going: the runner says so)."""
        self._mine = what
        if self.labs.run(kind or self.KIND, title, params, body, source) is None:
            self._mine = None
            return False
        self.panel.set_running(True, total)
        return True

    @property
    def running(self) -> bool:
        return self._mine is not None and self.labs.busy

    def stop(self) -> None:
        if self._mine:
            self.labs.stop()
            self.panel.show_status("Stopping at the next token…")

    def reopen(self, exp) -> None:
        """Show a stored lab run (``RunStore.load_experiment``): its records are replayed into the
        panel as if they were arriving, then its summary (none if it was cut short)."""
        self.replay(exp)
        self.panel.show_status(f"Lab run #{exp.id} of {exp.created_at[:19].replace('T', ' ')} on {exp.model_name} "
                               f"({exp.status}, {len(exp.records)} records).")

    def replay(self, exp) -> None:
        """Default replay: every record, then the summary. Labs whose panels need a start
        (``start_results`` with their own arguments) override this."""
        mode = getattr(exp.params, "mode", "")
        for record in exp.records:
            self.on_record(mode, record)
        self.on_finished(mode, exp.summary, exp.status)

    # ------------------------------------------------------------------ hooks
    def on_record(self, what: str, record) -> None:
        self.panel.add_record(record)

    def on_finished(self, what: str, summary: dict | None, status: str) -> None:
        self.panel.show_summary(summary, status)

    # ------------------------------------------------------------------ runner signals
    def _on_record(self, record: dict) -> None:
        if self._mine:
            self.on_record(self._mine, record)

    def _on_finished(self, summary, status: str) -> None:
        what, self._mine = self._mine, None
        if what:
            self.on_finished(what, summary, status)

    def _on_failed(self, failure) -> None:
        """A ``WorkbenchFailure`` of the lab runner (unexpected ones included: the run ended)."""
        if self._mine and not self.labs.busy:
            self._mine = None
            self.panel.show_error(failure.message)
