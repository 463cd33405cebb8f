"""Every write to the run store, off the GUI thread, in order, never dropped for a busy lock.

Owns: ``StoreWriter`` (one plain "store-writer" thread with a queue of writes; each write is
retried with back-off while another process holds the database locked, see
``app.core.store.retry_locked``) and ``RunSaver`` (a workbench run saved as it is made: the run
row when it starts, its steps as they arrive, how it ended).

Threads: ``submit``, ``RunSaver`` and the callbacks run on the GUI thread; the write functions
run on the store-writer thread with its own SQLite connection (``RunStore`` keeps one per
thread). Values handed to a write are frozen (``Step``, ``Finished``, ``RunHead``) or copied.
A 20,000-step run used to take 8 to 12 s of the GUI thread to save at its end; now each batch
of steps is written while the next ones are generated.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from typing import Any, Callable

from PySide6.QtCore import QObject, QTimer, Signal

from app.core.store import RunHead, RunStore, StoreError, retry_locked
from backends.base import Finished, Step

log = logging.getLogger(__name__)

__all__ = ["StoreWriter", "RunSaver"]

_tickets = itertools.count(1)
#: How long one write keeps trying while other writers hold the database (then it is reported).
LOCK_PATIENCE_S = 600.0
#: While a run streams, its steps are saved at most this often (a crash loses at most these).
SAVE_EVERY_S = 0.25


class StoreWriter(QObject):
    """Runs ``fn(store)`` functions one after another on the store-writer thread.

    ``failed(message)`` reports a write that could not be done (a lock held for more than
    ``LOCK_PATIENCE_S``, a full disk, a damaged file), once per problem, in words for the user.
    ``idle`` is True when every submitted write has finished (for tests and shutdown)."""

    failed = Signal(str)
    _done = Signal(int, object)  # ticket, (result,)
    _error = Signal(int, str)

    def __init__(self, store: RunStore, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._callbacks: dict[int, Callable[[Any], None] | None] = {}
        self._done.connect(self._on_done)
        self._error.connect(self._on_error)
        self._last_error = ""
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        return not self._callbacks

    def submit(self, fn: Callable[[RunStore], Any], on_done: Callable[[Any], None] | None = None) -> int:
        """Queue ``fn``; ``on_done(result)`` is called on the GUI thread when it succeeded."""
        ticket = next(_tickets)
        self._callbacks[ticket] = on_done
        self._queue.put((ticket, fn))
        return ticket

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            ticket, fn = item
            try:
                result = retry_locked(lambda: fn(self.store), timeout=LOCK_PATIENCE_S, stop=self._stop)
            except StoreError as exc:
                self._error.emit(ticket, str(exc))
            except Exception as exc:  # noqa: BLE001 - reported, the thread goes on
                log.exception("a store write failed")
                self._error.emit(ticket, f"The run could not be saved to the history ({type(exc).__name__}: {exc}).")
            else:
                self._done.emit(ticket, (result,))  # wrapped: PySide6 mis-counts a bare None
        self.store.close()

    def _on_done(self, ticket: int, wrapped: tuple) -> None:
        callback = self._callbacks.pop(ticket, None)
        if callback is not None:
            callback(wrapped[0])

    def _on_error(self, ticket: int, message: str) -> None:
        self._callbacks.pop(ticket, None)
        if message != self._last_error:  # a locked database fails every queued write alike: say it once
            self._last_error = message
            self.failed.emit(message)

    def shutdown(self, timeout: float = 30.0) -> None:
        """Finish the queued writes (for up to ``timeout`` seconds) and end the thread."""
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():  # still waiting on a lock: stop retrying, the run stays "running"
            self._stop.set()
            self._thread.join(5.0)
            log.warning("store writes were still waiting for the database when Samplescope closed")


class _Box:
    """The run's id once the store thread has created its row (read and written there only)."""

    __slots__ = ("run_id",)

    def __init__(self) -> None:
        self.run_id: int | None = None


class RunSaver:
    """One workbench run saved as it is made (GUI thread). ``add(step)`` after each step,
    ``finish(finished)`` at the end; ``on_saved(run_id)`` is called when the end is stored.

    Steps are written in batches: a batch is submitted when the previous one is done and at
    most every ``SAVE_EVERY_S`` (one SQLite transaction per token took about 3% of the token
    rate from llama.cpp on 2 cores); a crash loses at most the steps of the last
    ``SAVE_EVERY_S`` and of the batch in flight."""

    def __init__(self, writer: StoreWriter, head: RunHead, on_saved: Callable[[int], None] | None = None,
                 on_started: Callable[[int], None] | None = None) -> None:
        self.writer = writer
        self.head = head
        self.on_saved = on_saved
        self.on_started = on_started
        self._box = _Box()
        self._unsaved: list[Step] = []
        self._saved = 0
        self._in_flight = False
        self._started = False
        self._last_flush = 0.0
        self._timer_armed = False
        self.finished = False

    def _start(self) -> None:
        """The run's row, written when its first step arrives (a run that fails before any token
        leaves nothing behind)."""
        self._started = True
        box, head = self._box, self.head

        def start(store: RunStore) -> int:
            box.run_id = store.start_run(head)
            return box.run_id

        self.writer.submit(start, on_done=self.on_started)

    def add(self, step: Step) -> None:
        if not self._started:
            self._start()
        self._unsaved.append(step)
        self._flush_when_due()

    def _flush_when_due(self) -> None:
        """Flush now if the last batch is done and ``SAVE_EVERY_S`` has passed, else later."""
        if self._in_flight or self.finished or not self._unsaved:
            return
        wait = self._last_flush + SAVE_EVERY_S - time.monotonic()
        if wait <= 0:
            self._flush()
        elif not self._timer_armed:
            self._timer_armed = True
            QTimer.singleShot(max(1, int(wait * 1000)), self._on_timer)

    def _on_timer(self) -> None:
        self._timer_armed = False
        self._flush_when_due()

    def _flush(self) -> None:
        if not self._unsaved:
            return
        self._last_flush = time.monotonic()
        steps, first = tuple(self._unsaved), self._saved
        self._unsaved.clear()
        self._saved += len(steps)
        box = self._box
        self._in_flight = True

        def append(store: RunStore) -> None:
            if box.run_id is not None:  # None: the start failed, and that was reported
                store.append_steps(box.run_id, first, steps)

        self.writer.submit(append, on_done=self._appended)

    def _appended(self, _result) -> None:
        self._in_flight = False
        self._flush_when_due()

    def finish(self, finished: Finished | None) -> None:
        """Write what is left and how the run ended."""
        if self.finished:
            return
        self.finished = True
        if not self._started:
            return  # no step: nothing to keep
        self._flush()
        box, n = self._box, self._saved

        def end(store: RunStore) -> int | None:
            if box.run_id is None:
                return None
            store.finish_run(box.run_id, finished, n_steps=n)
            return box.run_id

        def saved(run_id: int | None) -> None:
            if run_id is not None and self.on_saved is not None:
                self.on_saved(run_id)

        self.writer.submit(end, on_done=saved)
