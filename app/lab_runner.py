"""Runs the labs' experiments (Verbalized Sampling comparisons, ...) on their own worker thread.

Owns: ``LabSource`` (which model a lab uses: the Workbench's loaded model or the connected
server, with its capabilities, as frozen data), ``LabRunner`` (a second ``GeneratorWorker`` named "lab-worker", so a long lab
run never blocks the workbench, and the lab's engines, cached per source), and the run-store
bookkeeping of a lab run: the run is started in the store when it begins, every record is
written as it arrives, and the summary and status ("done", "stopped", "failed") at the end,
so a Stop, an error or a crash keeps everything that arrived.

Threads: ``LabRunner`` lives on the GUI thread and hands every store write to the
``StoreWriter`` (its own thread, in order, retried while the database is locked); the job
bodies and the engines run on the lab worker only (``engine()`` is called from inside jobs). Values that
cross threads are plain dicts and frozen dataclasses.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from PySide6.QtCore import QObject, Signal

from app.core.errors import describe_unexpected
from app.core.records import Record, plain
from app.lab_registry import lab_named
from app.workbench_control import BusyFailure, LabFailure, UnexpectedFailure
from backends.base import Capabilities, LoadSettings
from backends.sources import LocalSource, RemoteConfig
from app.workers import GeneratorWorker, Job
from backends.base import BackendError

log = logging.getLogger(__name__)

__all__ = ["LabSource", "LabRunner"]


@dataclass(frozen=True)
class LabSource:
    """The model a lab run uses, as frozen data: ``capabilities`` (what it can do: every panel
    enables its controls from them), and either ``model`` (the loaded ``LlamaModel`` the
    Workbench uses: a lab makes its own context on it, the weights are shared) with
    ``model_path`` and the context size, or ``config`` (the connected server) with its probed
    ``caps``. ``name`` is what the user sees and the store records."""

    name: str
    capabilities: Capabilities
    model_path: str | None = None
    model: Any = None
    n_ctx: int = 2048
    n_threads: int | None = None
    config: RemoteConfig | None = None
    caps: Any = None
    model_sha256: str | None = None
    max_parallel: int = 8

    @property
    def local(self) -> bool:
        return self.capabilities.local

    @property
    def location(self) -> str | None:
        return self.model_path if self.local else (self.config.base_url if self.config else None)

    def open(self):
        """A backend for the lab (``open_backend``): a new context on the shared model, or a new
        HTTP client (the Workbench's belongs to its own worker)."""
        from backends.open import open_backend

        if self.local:
            return open_backend(LocalSource(self.model_path, LoadSettings(self.n_ctx, 0, self.n_threads or 0)),
                                model=self.model)
        return open_backend(self.config)


class _Box:
    """The lab run's id in the store once the store thread has created it (read and written there)."""

    __slots__ = ("id",)

    def __init__(self) -> None:
        self.id: int | None = None


class LabRunner(QObject):
    """One lab run at a time on the "lab-worker" thread (see the module docstring)."""

    started = Signal(int)  # the lab run's id in the store, once its row is written
    record = Signal(object)  # a typed Record, in arrival order
    finished = Signal(object, str)  # the typed summary (or None), status
    failed = Signal(object)  # a WorkbenchFailure (BusyFailure, LabFailure, UnexpectedFailure with the traceback)
    busyChanged = Signal(bool)

    def __init__(self, store=None, writer=None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.writer = writer  # a StoreWriter: every store write goes through it, off the GUI thread
        self.worker = GeneratorWorker("lab-worker", parent=self)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.done.connect(self._on_done)
        self.worker.failed.connect(self._on_failed)
        self._job: Job | None = None
        self._experiment_id: int | None = None
        self._engines: dict[tuple, Any] = {}  # used on the lab worker only
        self.records: list[Record] = []

    @property
    def busy(self) -> bool:
        return self._job is not None

    @property
    def experiment_id(self) -> int | None:
        return self._experiment_id

    # ------------------------------------------------------------------ engines (lab worker)
    def engine(self, source: LabSource, lab: str | None = None):
        """The cached engine of the lab named ``lab`` (the registry's ``LabSpec.engine``) for
        ``source``, or with no ``lab`` a plain backend (``source.open()``), created on first use.
        Call only from inside a job (the lab worker). Engines of other sources are closed first,
        so at most one model's worth of lab engines is held in memory."""
        key = (lab, source.capabilities.kind, source.location, id(source.model),
               source.config.model if source.config else None, source.n_ctx, source.max_parallel)
        if key in self._engines:
            return self._engines[key]
        self._close_engines()
        engine = source.open() if lab is None else lab_named(lab).make_engine(source)
        self._engines[key] = engine
        return engine

    def _close_engines(self) -> None:
        for engine in self._engines.values():
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing a lab engine failed", exc_info=True)
        self._engines.clear()

    # ------------------------------------------------------------------ runs (GUI thread)
    def run(self, kind: str, title: str, params: Record, body: Callable[[threading.Event], Iterator[Record]],
            source: LabSource) -> Job | None:
        """Start a lab run: ``body(cancel)`` runs on the lab worker, yields typed records
        (``app.core.records.Record``) and returns a typed summary (or None); the store gets
        their ``to_dict`` forms, the presenters the records themselves. Returns None (and says
        why) if a run is going."""
        if self._job is not None:
            self.failed.emit(BusyFailure("A lab run is still going: stop it (Esc) or wait for it to finish."))
            return None
        self.records = []
        self._experiment_id = None
        self._box = box = _Box()
        if self.writer is not None:
            def start(store) -> int:
                box.id = store.start_experiment(kind, title, plain(params), model_name=source.name,
                                                model_path=source.location, model_sha256=source.model_sha256)
                return box.id

            self.writer.submit(start, on_done=self._on_started)
        self._job = Job(body, kind=kind)
        self.busyChanged.emit(True)
        self.worker.submit(self._job)
        return self._job

    def _on_started(self, experiment_id: int) -> None:
        self._experiment_id = experiment_id
        self.started.emit(experiment_id)

    def stop(self) -> None:
        """Ask the running job to stop; it ends at the next token and keeps what arrived."""
        if self._job is not None:
            self._job.cancel.set()

    def _mine(self, job_id: int) -> bool:
        return self._job is not None and job_id == self._job.id

    def _on_yielded(self, job_id: int, item: object) -> None:
        if not self._mine(job_id) or not isinstance(item, Record):  # TICK and other progress: not records
            return
        self.records.append(item)
        if self.writer is not None:
            box = self._box

            def add(store) -> None:
                if box.id is not None:  # None: the start failed, and the writer said so
                    store.add_record(box.id, plain(item))

            self.writer.submit(add)
        self.record.emit(item)

    def _end(self, summary: Record | None, status: str) -> None:
        if self.writer is not None:
            box = self._box

            def finish(store) -> None:
                if box.id is not None:
                    store.finish_experiment(box.id, plain(summary), status)

            self.writer.submit(finish)
        self._job = None
        self.busyChanged.emit(False)

    def _on_done(self, job_id: int, result: object) -> None:
        if not self._mine(job_id):
            return
        cancelled = self._job.cancel.is_set()
        summary = result if isinstance(result, Record) else None
        done = bool(getattr(summary, "cancelled", False))
        status = "stopped" if cancelled or done else "done"
        self._end(summary, status)
        self.finished.emit(summary, status)

    def _on_failed(self, job_id: int, exc: object, tb: str) -> None:
        if not self._mine(job_id):
            return
        self._end(None, "failed")
        kept = f"\nThe {len(self.records)} result(s) that arrived before are kept."
        if isinstance(exc, (BackendError, ValueError, OSError)):
            self.failed.emit(LabFailure(str(exc) + kept))
        else:
            log.error("lab job failed:\n%s", tb)
            self.failed.emit(UnexpectedFailure(describe_unexpected(exc, "The lab run") + kept, tb,
                                               title="Lab run failed"))

    def shutdown(self) -> None:
        """Stop the running job, wait for the worker, close the engines."""
        self.stop()
        self.worker.shutdown()
        self._close_engines()
