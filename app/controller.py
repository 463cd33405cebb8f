"""The controller between the window and the model worker.

Owns: the loaded backend (used only inside jobs on the worker thread), the current
``Trace`` and step-mode session, and the model state. Lives on the GUI thread: it submits
jobs to a ``GeneratorWorker``, receives frozen values from it, appends them to the trace on
the GUI thread, drops values from stale jobs, saves finished runs to the run store, and turns
errors into signals with messages a user can act on.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Iterator

from PySide6.QtCore import QObject, Signal

from app.core.session import GenerationSession
from app.core.trace import Trace
from app.workers import GeneratorWorker, Job
from backends.base import BackendError, Finished, ModelInfo, SamplerSettings, Step

log = logging.getLogger(__name__)

__all__ = ["WorkbenchController", "LoadProgress", "Pending"]


class LoadProgress(tuple):
    """(done, total, what) yielded by the load job."""


class Pending(tuple):
    """(step_preview,) yielded in step mode: the distribution of the next, not yet chosen,
    token. ``step_preview.token_id`` is the most likely token under the chain."""


class WorkbenchController(QObject):
    stateChanged = Signal(str)  # "loading", "ready", "generating", "stepping", "no model"
    modelLoaded = Signal(object)  # ModelInfo
    loadProgress = Signal(int, int, str)
    traceReset = Signal(object)  # a new Trace (generation started or a run reopened)
    stepsAdded = Signal()
    pendingChanged = Signal(object)  # Step | None
    generationFinished = Signal(object)  # Finished
    errorOccurred = Signal(str, str)  # title, message
    runSaved = Signal(int)

    def __init__(self, store=None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.worker = GeneratorWorker(parent=self)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.done.connect(self._on_done)
        self.worker.failed.connect(self._on_failed)
        self._backend = None
        self.model_info: ModelInfo | None = None
        self.model_sha256: str = ""
        self.trace: Trace | None = None
        self._session: GenerationSession | None = None
        self._jobs: dict[int, str] = {}
        self._gen_job: Job | None = None
        self._state = "no model"
        self._stop_after_step = False
        self.last_tokens_per_s = 0.0

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> str:
        return self._state

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.stateChanged.emit(state)

    @property
    def busy(self) -> bool:
        return self._state in ("loading", "generating") or "step" in self._jobs.values()

    # ------------------------------------------------------------------ loading
    def load_model(
        self, path: str | None = None, *, n_ctx: int = 2048, n_gpu_layers: int = 0, n_threads: int = 0
    ) -> Job:
        """Load ``path`` (None: the embedded model, assembled on first use) on the worker. The
        current model stays loaded until the new one has loaded."""
        self._end_step_mode()

        def job(cancel: threading.Event) -> Iterator[object]:
            from backends.llama_local import LlamaCppBackend
            from backends.models import iter_embedded_model

            if path is None:
                gen = iter_embedded_model()
                while True:
                    try:
                        yield LoadProgress(next(gen))
                    except StopIteration as stop:
                        target = stop.value
                        break
            else:
                target = Path(path)
            yield LoadProgress((0, 0, f"Loading {target.name}…"))
            backend = LlamaCppBackend(target, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers, n_threads=n_threads or None)
            sha = ""
            if self.store is not None:
                try:
                    from app.core.store import RunStore

                    local = RunStore(self.store.path) if hasattr(self.store, "path") else None
                    if local is not None:
                        sha = local.sha256_of(str(target))
                        local.close()
                except Exception as exc:  # the hash is a nicety: never fail the load for it
                    log.warning("could not hash %s: %s", target, exc)
            return backend, sha

        job_obj = Job(job, kind="load")
        self._jobs[job_obj.id] = "load"
        self._set_state("loading")
        self.worker.submit(job_obj)
        return job_obj

    # ------------------------------------------------------------------ generation
    def generate(self, prompt: str, settings: SamplerSettings) -> Job | None:
        """Generate to the end on the worker; steps arrive through ``stepsAdded``."""
        if not self._check_ready(prompt, settings):
            return None
        self._end_step_mode()
        self.trace = Trace(prompt=prompt, settings=settings, model_name=self.model_info.name)
        self.traceReset.emit(self.trace)
        backend = self._backend

        def job(cancel: threading.Event) -> Iterator[object]:
            session = GenerationSession(backend, prompt, settings)
            yield from session.run(cancel)

        job_obj = Job(job, kind="generate")
        self._gen_job = job_obj
        self._jobs[job_obj.id] = "generate"
        self._set_state("generating")
        self.worker.submit(job_obj)
        return job_obj

    def step(self, prompt: str, settings: SamplerSettings, token_id: int | None = None) -> Job | None:
        """Step mode: take one token (``token_id`` or sampled), then show the next
        distribution as pending. The first call starts a new run."""
        if self._state == "generating":
            return None
        if self._session is None or self._session.finished is not None:
            if not self._check_ready(prompt, settings):
                return None
            self._session = GenerationSession(self._backend, prompt, settings)
            self.trace = Trace(prompt=prompt, settings=settings, model_name=self.model_info.name)
            self.traceReset.emit(self.trace)
            first = True
        else:
            first = False
        session = self._session

        def job(cancel: threading.Event) -> Iterator[object]:
            if first:
                session.start()
            else:
                yield session.commit(token_id)
            if session.finished is not None:
                yield session.finished
                return
            result = session.analyze()
            best = int(result.ids[int(result.probs.argmax())])
            yield Pending(
                (
                    result.to_step(
                        best,
                        index=len(session.steps),
                        position=session.position,
                        text="",
                        piece=session.engine.piece(best),
                        piece_of=session.engine.piece,
                    ),
                )
            )

        job_obj = Job(job, kind="step")
        self._jobs[job_obj.id] = "step"
        self._set_state("stepping")
        self.worker.submit(job_obj)
        return job_obj

    @property
    def in_step_mode_run(self) -> bool:
        return self._session is not None and self._session.finished is None

    def finish_step_run(self) -> None:
        """End a step-mode run, keeping and saving what was produced."""
        if self._session is not None and self._session.finished is None:
            fin = self._session.cancel()
            self._finish_trace(fin)
        self._session = None
        self.pendingChanged.emit(None)

    def _end_step_mode(self) -> None:
        if self._session is not None:
            self.finish_step_run()

    def stop(self) -> None:
        """Stop the running generation between two steps; the partial output is kept."""
        if self._gen_job is not None:
            self._gen_job.cancel.set()
        elif self.in_step_mode_run:
            if "step" in self._jobs.values():
                self._stop_after_step = True  # the session is busy on the worker: stop after it
                return
            self.finish_step_run()
            self._set_state("ready" if self._backend else "no model")

    def _check_ready(self, prompt: str, settings: SamplerSettings) -> bool:
        if self._backend is None:
            self.errorOccurred.emit("No model", "Load a model first (File > Open, or wait for the embedded model).")
            return False
        if self.busy:
            return False
        if not prompt:
            self.errorOccurred.emit("Empty prompt", "Type a prompt to continue from.")
            return False
        try:
            settings.validate()
        except ValueError as exc:
            self.errorOccurred.emit("Invalid setting", str(exc))
            return False
        return True

    # ------------------------------------------------------------------ worker results
    def _on_yielded(self, job_id: int, item: object) -> None:
        kind = self._jobs.get(job_id)
        if kind is None:
            return  # stale
        if isinstance(item, LoadProgress):
            self.loadProgress.emit(*item)
        elif isinstance(item, Step):
            if self.trace is not None:
                self.trace.append(item)
                self.stepsAdded.emit()
        elif isinstance(item, Pending):
            self.pendingChanged.emit(item[0])
        elif isinstance(item, Finished):
            # Finished is a job's last value: the model is free from now on, so the state changes
            # before anyone hears of the end (a Step pressed right after Stop must not be lost)
            self._jobs.pop(job_id, None)
            if kind == "generate":
                self._gen_job = None
            if kind == "step":
                self._session = None
            if not self._jobs:
                self._set_state("ready" if self._backend is not None else "no model")
            self.pendingChanged.emit(None)
            self._finish_trace(item)

    def _finish_trace(self, fin: Finished) -> None:
        if self.trace is None:
            return
        self.trace.finished = fin
        self.last_tokens_per_s = fin.tokens_per_s
        if self.store is not None and self.trace.steps:
            try:
                run_id = self.store.save_run(
                    self.trace, str(self.model_info.path) if self.model_info else None,
                    self.model_info.name if self.model_info else "", model_sha256=self.model_sha256,
                )
                self.runSaved.emit(run_id)
            except Exception as exc:  # noqa: BLE001
                log.exception("saving run failed")
                self.errorOccurred.emit("Run not saved", f"The run could not be saved to the history: {exc}")
        self.generationFinished.emit(fin)

    def _on_done(self, job_id: int, result: object) -> None:
        kind = self._jobs.pop(job_id, None)
        if kind == "load":
            backend, sha = result
            old = self._backend
            self._backend = backend
            self.model_info = backend.info
            self.model_sha256 = sha
            if old is not None:
                old.close()  # safe: the worker is idle between jobs and we are its only user
            self.modelLoaded.emit(backend.info)
        if kind == "generate":
            self._gen_job = None
        if not self._jobs:
            if kind == "step" and self._stop_after_step:
                self._stop_after_step = False
                self.finish_step_run()
            self._set_state("ready" if self._backend is not None else "no model")
            if kind == "step" and self.in_step_mode_run:
                self._set_state("stepping")

    def _on_failed(self, job_id: int, exc: object, tb: str) -> None:
        kind = self._jobs.pop(job_id, None)
        if kind == "generate":
            self._gen_job = None
        if kind == "step":
            self._session = None
            self.pendingChanged.emit(None)
        if isinstance(exc, BackendError):
            title = {"load": "Model not loaded", "generate": "Generation failed", "step": "Step failed"}.get(
                kind or "", "Error"
            )
            msg = str(exc)
            if kind == "load" and self._backend is not None:
                msg += f"\n\nStill using {self.model_info.name}."
        else:
            title = "Unexpected error"
            msg = f"{type(exc).__name__}: {exc}\n\n{tb}"
            log.error("worker job failed: %s", tb)
        # keep what was produced: a failed generation still ends its trace
        if kind in ("generate", "step") and self.trace is not None and self.trace.finished is None:
            self._finish_trace(
                Finished("error", self.trace.text, len(self.trace), 0.0, message=str(exc))
            )
        if not self._jobs:
            self._set_state("ready" if self._backend is not None else "no model")
        self.errorOccurred.emit(title, msg)

    # ------------------------------------------------------------------ history
    def open_run(self, run_id: int) -> Trace | None:
        if self.store is None:
            return None
        try:
            trace = self.store.load_run(run_id)
        except Exception as exc:  # noqa: BLE001
            self.errorOccurred.emit("Run not opened", str(exc))
            return None
        self.trace = trace
        self.traceReset.emit(trace)
        self.stepsAdded.emit()
        return trace

    def shutdown(self) -> None:
        self.worker.shutdown()
        if self._backend is not None:
            self._backend.close()
            self._backend = None
