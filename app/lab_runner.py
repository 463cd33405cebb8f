"""Runs the labs' experiments (Verbalized Sampling comparisons, ...) on their own worker thread.

Owns: ``LabSource`` (which model a lab uses: the local GGUF file or the connected server, as
frozen data), ``LabRunner`` (a second ``GeneratorWorker`` named "lab-worker", so a long lab
run never blocks the workbench, and the lab's engines, cached per source), and the run-store
bookkeeping of a lab run: the run is started in the store when it begins, every record is
written as it arrives, and the summary and status ("done", "stopped", "failed") at the end,
so a Stop, an error or a crash keeps everything that arrived.

Threads: ``LabRunner`` lives on the GUI thread and owns the store calls; the job bodies and
the engines run on the lab worker only (``engine()`` is called from inside jobs). Values that
cross threads are plain dicts and frozen dataclasses.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from PySide6.QtCore import QObject, Signal

from app.core.remote import RemoteConfig
from app.workers import GeneratorWorker, Job
from backends.base import BackendError

log = logging.getLogger(__name__)

__all__ = ["LabSource", "LabRunner"]


@dataclass(frozen=True)
class LabSource:
    """The model a lab run uses. ``kind`` is "local" (``model_path``) or "remote" (``config``
    and the probed ``caps``). ``name`` is what the user sees and the store records."""

    kind: str
    name: str
    model_path: str | None = None
    n_ctx: int = 2048
    n_threads: int | None = None
    config: RemoteConfig | None = None
    caps: Any = None
    model_sha256: str | None = None

    @property
    def local(self) -> bool:
        return self.kind == "local"

    @property
    def location(self) -> str | None:
        return self.model_path if self.local else (self.config.base_url if self.config else None)


def _remote_backend(source: LabSource):
    """A new HTTP client for the lab (the workbench's client belongs to its own worker)."""
    from app.core.secrets import resolve_api_key
    from backends.openai_compat import OpenAICompatBackend

    cfg = source.config
    key_value = resolve_api_key(cfg.api_key_env or None, cfg.keyring_entry or None)
    return OpenAICompatBackend(cfg.base_url, cfg.model or None, api_key=key_value,
                               connect_timeout=cfg.connect_timeout, read_timeout=cfg.read_timeout)


def _make_engine(kind: str, source: LabSource):
    """The engine of lab ``kind`` for ``source``: "vs" (``LocalVSEngine`` / ``RemoteVSEngine``),
    "shift" (``LocalShiftEngine`` / ``RemoteShiftEngine``) or "logits" (a ``LlamaCppBackend`` /
    an ``OpenAICompatBackend``)."""
    if kind == "vs":
        from app.core.experiments.vs import LocalVSEngine, RemoteVSEngine

        if source.local:
            return LocalVSEngine(source.model_path, n_ctx=source.n_ctx, n_threads=source.n_threads)
        return RemoteVSEngine(_remote_backend(source), source.caps)
    if kind == "shift":
        from app.core.experiments.shift import LocalShiftEngine, RemoteShiftEngine

        if source.local:
            return LocalShiftEngine.open(source.model_path, n_ctx=source.n_ctx, n_threads=source.n_threads)
        return RemoteShiftEngine(_remote_backend(source))
    if kind == "logits":
        if source.local:
            from backends.llama_local import LlamaCppBackend

            return LlamaCppBackend(source.model_path, n_ctx=source.n_ctx, n_threads=source.n_threads)
        return _remote_backend(source)
    raise ValueError(f"unknown lab engine {kind!r}")


class LabRunner(QObject):
    """One lab run at a time on the "lab-worker" thread (see the module docstring)."""

    started = Signal(int)  # the lab run's id in the store (-1 when it could not be stored)
    record = Signal(object)  # dict, in arrival order
    finished = Signal(object, str)  # summary dict (or None), status
    failed = Signal(str, str)  # title, message
    busyChanged = Signal(bool)

    def __init__(self, store=None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.worker = GeneratorWorker("lab-worker", parent=self)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.done.connect(self._on_done)
        self.worker.failed.connect(self._on_failed)
        self._job: Job | None = None
        self._experiment_id: int | None = None
        self._store_warned = False
        self._engines: dict[tuple, Any] = {}  # used on the lab worker only
        self.records: list[dict] = []

    @property
    def busy(self) -> bool:
        return self._job is not None

    @property
    def experiment_id(self) -> int | None:
        return self._experiment_id

    # ------------------------------------------------------------------ engines (lab worker)
    def engine(self, source: LabSource, kind: str = "vs"):
        """The cached engine of ``kind`` for ``source``, created on first use. Call only from
        inside a job (the lab worker). Engines of other sources are closed first, so at most
        one model's worth of lab engines is held in memory."""
        key = (kind, source.kind, source.location, source.config.model if source.config else None, source.n_ctx)
        if key in self._engines:
            return self._engines[key]
        self._close_engines()
        engine = _make_engine(kind, source)
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
    def run(self, kind: str, title: str, params: dict, body: Callable[[threading.Event], Iterator[dict]],
            source: LabSource) -> Job | None:
        """Start a lab run: ``body(cancel)`` runs on the lab worker, yields record dicts and
        returns a summary dict (or None). Returns None (and says why) if a run is going."""
        if self._job is not None:
            self.failed.emit("Busy", "A lab run is still going: stop it (Esc) or wait for it to finish.")
            return None
        self.records = []
        self._experiment_id = None
        if self.store is not None:
            try:
                self._experiment_id = self.store.start_experiment(
                    kind, title, params, model_name=source.name, model_path=source.location,
                    model_sha256=source.model_sha256)
            except Exception as exc:  # noqa: BLE001 - the run goes on without the store
                self._warn_store(exc)
        self._job = Job(body, kind=kind)
        self.busyChanged.emit(True)
        self.started.emit(self._experiment_id if self._experiment_id is not None else -1)
        self.worker.submit(self._job)
        return self._job

    def stop(self) -> None:
        """Ask the running job to stop; it ends at the next token and keeps what arrived."""
        if self._job is not None:
            self._job.cancel.set()

    def _warn_store(self, exc: BaseException) -> None:
        if not self._store_warned:
            self._store_warned = True
            self.failed.emit("Lab results not saved",
                             f"{exc}\nThe lab keeps running and shows its results; they are not in the history.")

    def _mine(self, job_id: int) -> bool:
        return self._job is not None and job_id == self._job.id

    def _on_yielded(self, job_id: int, item: object) -> None:
        if not self._mine(job_id) or not isinstance(item, dict):
            return
        self.records.append(item)
        if self._experiment_id is not None:
            try:
                self.store.add_record(self._experiment_id, item)
            except Exception as exc:  # noqa: BLE001
                self._warn_store(exc)
        self.record.emit(item)

    def _end(self, summary: dict | None, status: str) -> None:
        if self._experiment_id is not None:
            try:
                self.store.finish_experiment(self._experiment_id, summary, status)
            except Exception as exc:  # noqa: BLE001
                self._warn_store(exc)
        self._job = None
        self.busyChanged.emit(False)

    def _on_done(self, job_id: int, result: object) -> None:
        if not self._mine(job_id):
            return
        cancelled = self._job.cancel.is_set()
        summary = result if isinstance(result, dict) else None
        status = "stopped" if cancelled or (summary or {}).get("cancelled") else "done"
        self._end(summary, status)
        self.finished.emit(summary, status)

    def _on_failed(self, job_id: int, exc: object, tb: str) -> None:
        if not self._mine(job_id):
            return
        self._end(None, "failed")
        if isinstance(exc, (BackendError, ValueError, OSError)):
            title, message = "Lab run failed", str(exc)
        else:
            log.error("lab job failed:\n%s", tb)
            title, message = "Lab run failed", f"An unexpected error stopped the lab run: {exc!r}"
        message += f"\nThe {len(self.records)} result(s) that arrived before are kept."
        self.failed.emit(title, message)

    def shutdown(self) -> None:
        """Stop the running job, wait for the worker, close the engines."""
        self.stop()
        self.worker.shutdown()
        self._close_engines()
