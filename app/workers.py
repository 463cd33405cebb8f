"""Run plain generators on a worker thread and deliver what they yield as Qt signals.

Owns: ``Job`` (a generator factory plus its cancel event) and ``GeneratorWorker`` (one
QThread that runs jobs one after another, so one llama.cpp context never sees two jobs at
once). The job's code runs on the worker thread; the signals are delivered on the GUI
thread by Qt's queued connections. Values that cross are frozen dataclasses or plain data.
"""

from __future__ import annotations

import itertools
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from PySide6.QtCore import QObject, QThread, Signal, Slot

__all__ = ["Job", "GeneratorWorker"]

_ids = itertools.count(1)


@dataclass
class Job:
    """``fn(cancel)`` returns a generator; each yielded value is emitted as ``yielded``, its
    return value as ``done``; any exception as ``failed``."""

    fn: Callable[[threading.Event], Iterator[Any]]
    kind: str = "job"
    id: int = field(default_factory=lambda: next(_ids))
    cancel: threading.Event = field(default_factory=threading.Event)


class _Runner(QObject):
    yielded = Signal(int, object)
    done = Signal(int, object)
    failed = Signal(int, object, str)

    @Slot(object)
    def run(self, job: Job) -> None:
        try:
            gen = job.fn(job.cancel)
            result = None
            while True:
                try:
                    item = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                self.yielded.emit(job.id, item)
            # wrapped: PySide6 mis-counts references to a bare None sent through a queued
            # ``object`` signal (seen as "Fatal Python error: none_dealloc")
            self.done.emit(job.id, (result,))
        except BaseException as exc:  # noqa: BLE001 - everything is reported to the GUI
            self.failed.emit(job.id, exc, traceback.format_exc())


class GeneratorWorker(QObject):
    """A single worker thread with a queue of jobs (Qt's event queue)."""

    yielded = Signal(int, object)
    done = Signal(int, object)
    failed = Signal(int, object, str)
    _submit = Signal(object)

    def __init__(self, name: str = "model-worker", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName(name)
        self._runner = _Runner()
        self._runner.moveToThread(self._thread)
        self._submit.connect(self._runner.run)
        self._runner.yielded.connect(self.yielded)
        self._runner.done.connect(self._on_done)
        self._runner.failed.connect(self._on_failed)
        self._active: dict[int, Job] = {}
        self._thread.start()

    def submit(self, job: Job) -> Job:
        self._active[job.id] = job
        self._submit.emit(job)
        return job

    def cancel_all(self) -> None:
        for job in self._active.values():
            job.cancel.set()

    @property
    def busy(self) -> bool:
        return bool(self._active)

    def _on_done(self, job_id: int, wrapped: tuple) -> None:
        self._active.pop(job_id, None)
        self.done.emit(job_id, wrapped[0])

    def _on_failed(self, job_id: int, exc: object, tb: str) -> None:
        self._active.pop(job_id, None)
        self.failed.emit(job_id, exc, tb)

    def shutdown(self, timeout_ms: int = 10000) -> None:
        """Cancel running jobs and stop the thread (waits for the current step to end)."""
        self.cancel_all()
        self._thread.quit()
        self._thread.wait(timeout_ms)
