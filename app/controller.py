"""The controller between the window and the model worker.

Owns: the loaded backend (used only inside jobs on the worker thread), the current
``Trace`` and step-mode session, and the model state. Lives on the GUI thread: it submits
jobs to a ``GeneratorWorker``, receives frozen values from it, appends them to the trace on
the GUI thread, drops values from stale jobs, saves finished runs to the run store, and turns
errors into signals with messages a user can act on.

Over 500 lines on purpose: the Workbench's state machine (load, connect, generate, step) in one
place, so every transition is seen together.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterator

from PySide6.QtCore import QObject, Signal

from app.core.errors import describe_unexpected
from app.workbench_control import (BusyFailure, ConnectionSettingsFailure, InvalidInputFailure, JobKind, LoadProgress,
                          Loaded, ModelLoadFailure, NoModelFailure, Probed, NotSaved, Pending, RunNotOpened, State,
                          StepModeUnavailable, UnexpectedFailure, WhatIfUnavailable, WorkbenchFailure,
                          XrayUnavailable,
                          failure_for_job)
from backends.sources import LocalSource, RemoteConfig
from app.core.session import GenerationSession
from app.core.trace import Trace
from app.core.whatif import LogitMemory
from app.core.store import RunHead
from app.lab_runner import LabRunner, LabSource
from app.store_writer import RunSaver, StoreWriter
from app.workers import GeneratorWorker, Job
from backends.base import (BackendError, Capabilities, Finished, LoadSettings, ModelInfo, SamplerSettings, Step,
                           require_prompt)

log = logging.getLogger(__name__)

__all__ = ["WorkbenchController", "LoadProgress", "Pending", "State", "JobKind"]


class WorkbenchController(QObject):
    stateChanged = Signal(str)  # a State (a StrEnum: compares equal to its word)
    modelLoaded = Signal(object)  # ModelInfo
    loadProgress = Signal(int, int, str)
    traceReset = Signal(object)  # a new Trace (generation started or a run reopened)
    traceOpened = Signal(object)  # a stored run or a lab generation shown (after traceReset)
    stepsAdded = Signal()
    pendingChanged = Signal(object)  # Step | None
    generationFinished = Signal(object)  # Finished
    xrayDone = Signal(object)  # app.core.scoring.ScoreResult: the prompt X-ray, shown as the trace
    logitsRecomputed = Signal(int)  # the shown run's logits are in logit_memory again: how many steps
    failed = Signal(object)  # a WorkbenchFailure: the window reacts to its type
    errorOccurred = Signal(str, str)  # the same failure in words: title, message (not for UnexpectedFailure)
    unexpectedError = Signal(str, str, str)  # title, message, details (the traceback): a bug, not a user error
    remoteTested = Signal(object, object)  # models list, server capabilities
    remoteConnected = Signal(object)  # server capabilities
    waitCountdown = Signal(float, str)  # seconds left, reason (a 429 back-off, a retry)
    runSaved = Signal(int)

    def __init__(self, store=None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.worker = GeneratorWorker(parent=self)
        self.worker.yielded.connect(self._on_yielded)
        self.worker.done.connect(self._on_done)
        self.worker.failed.connect(self._on_failed)
        self._backend = None
        self._remote = None
        self.remote_caps = None
        self.remote_config: RemoteConfig | None = None
        self._pending_remote_config: RemoteConfig | None = None
        self._local_info: ModelInfo | None = None
        self.model_info: ModelInfo | None = None
        self.model_sha256: str = ""
        self.trace: Trace | None = None
        #: the full logits of recent local runs' steps, for the live what-if (bounded; a setting)
        self.logit_memory = LogitMemory()
        #: which run of ``logit_memory`` the shown trace is (None: a run it does not hold)
        self.trace_memory_key: int | None = None
        self._memory_runs = 0
        self._session: GenerationSession | None = None
        self._xray_settings = SamplerSettings()
        self._jobs: dict[int, JobKind] = {}
        self._gen_job: Job | None = None
        self._recompute_job: Job | None = None  # the what-if's background recomputation, if one runs
        self._state = State.NO_MODEL
        self._stop_after_step = False
        self.last_tokens_per_s = 0.0
        #: the most generations a lab runs at once: sequences of one batch locally, requests remotely
        self.max_parallel = 8
        self.max_parallel_remote = 4
        self.writer = StoreWriter(store, parent=self) if store is not None else None
        if self.writer is not None:
            self.writer.failed.connect(lambda msg: self._fail(NotSaved(msg)))
        self._saver: RunSaver | None = None
        self.labs = LabRunner(store, writer=self.writer, parent=self)

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> State:
        return self._state

    def _set_state(self, state: State) -> None:
        if state != self._state:
            self._state = state
            self.stateChanged.emit(state)

    def _fail(self, failure: WorkbenchFailure) -> None:
        """Tell the window (``failed``, by type) and any listener (``errorOccurred``, in words,
        or ``unexpectedError`` with the traceback for a bug)."""
        self.failed.emit(failure)
        if isinstance(failure, UnexpectedFailure):
            self.unexpectedError.emit(failure.title, failure.message, failure.details)
        else:
            self.errorOccurred.emit(failure.title, failure.message)

    def _submit(self, fn, kind: JobKind, state: State) -> Job:
        """Queue ``fn`` on the model worker as a job of ``kind`` and enter ``state``."""
        job = Job(fn, kind=kind)
        self._jobs[job.id] = kind
        self._set_state(state)
        self.worker.submit(job)
        return job

    def _idle_state(self) -> State:
        return State.READY if (self._backend is not None or self._remote is not None) else State.NO_MODEL

    @property
    def busy(self) -> bool:
        return self._state in (State.LOADING, State.GENERATING) or any(
            k in (JobKind.STEP, JobKind.RECOMPUTE) for k in self._jobs.values())

    # ------------------------------------------------------------------ loading
    def load_model(
        self, path: str | None = None, *, n_ctx: int = 2048, n_gpu_layers: int = 0, n_threads: int = 0
    ) -> Job:
        """Load ``path`` (None: the embedded model, assembled on first use) on the worker. The
        current model stays loaded until the new one has loaded."""
        if self._state == State.GENERATING:
            self._fail(BusyFailure("Stop the running generation (Esc) before loading another model."))
            return None
        try:
            LoadSettings(n_ctx, n_gpu_layers, n_threads).validate()
        except ValueError as exc:
            self._fail(ModelLoadFailure(f"Check the model settings: {exc}."))
            return None
        self._end_step_mode()

        source = LocalSource(path, LoadSettings(n_ctx, n_gpu_layers, n_threads))

        def job(cancel: threading.Event) -> Iterator[object]:
            from backends.open import iter_open

            gen = iter_open(source)
            while True:
                try:
                    yield LoadProgress(*next(gen))
                except StopIteration as stop:
                    backend = stop.value
                    break
            return Loaded(backend, str(backend.path))

        return self._submit(job, JobKind.LOAD, State.LOADING)

    def _hash_in_background(self, model_file: str) -> None:
        """SHA-256 of the model file for the run store: computed once per file (cached in the
        store by size and mtime) on a plain thread, so a multi-GB model is usable at once."""
        if self.store is None or not hasattr(self.store, "path"):
            return
        store_path = self.store.path

        def work() -> None:
            from app.core.store import RunStore

            try:
                local = RunStore(store_path)
                try:
                    sha = local.sha256_of(model_file)
                finally:
                    local.close()
            except Exception as exc:  # the hash is a nicety: never fail anything for it
                log.warning("could not hash %s: %s", model_file, exc)
                return
            if self._local_info is not None and self._local_info.path == model_file and self._remote is None:
                self.model_sha256 = sha  # a str assignment: atomic, read on the GUI thread when saving

        threading.Thread(target=work, name="model-hash", daemon=True).start()

    # ------------------------------------------------------------------ remote servers
    @property
    def remote(self):
        """The connected remote backend, or None when the local model is in use."""
        return self._remote

    @property
    def capabilities(self) -> Capabilities:
        """What the backend in use can do (the connected server, else the local model; nothing
        before a model is loaded). The window enables its controls from it."""
        if self._remote is not None:
            return self._remote.capabilities
        if self._backend is not None:
            return self._backend.capabilities
        return Capabilities(kind="none", notes=("No model is loaded.",))

    def test_remote(self, config: RemoteConfig) -> Job | None:
        """List the server's models and probe what it can do; nothing changes on success."""
        return self._remote_job(config, kind=JobKind.TEST)

    def connect_remote(self, config: RemoteConfig) -> Job | None:
        """Probe the server and use it for generation from now on."""
        return self._remote_job(config, kind=JobKind.CONNECT)

    def _remote_job(self, config: RemoteConfig, *, kind: JobKind) -> Job | None:
        if self.busy:
            return None
        try:
            config.validate()
        except ValueError as exc:
            self._fail(ConnectionSettingsFailure(str(exc)))
            return None
        self._end_step_mode()

        def job(cancel: threading.Event) -> Iterator[object]:
            from backends.open import open_backend

            yield LoadProgress(0, 0, f"Connecting to {config.base_url}…")
            backend = open_backend(config)
            try:
                models = backend.list_models()
                model = config.model or (models[0] if models else "")
                yield LoadProgress(0, 0, f"Probing {model or 'the server'}…")
                caps = backend.probe(model)
            except BaseException:
                backend.close()
                raise
            if kind == JobKind.TEST:
                backend.close()
                backend = None
            return Probed(models, caps, model, backend)

        self._pending_remote_config = config
        return self._submit(job, kind, State.LOADING)

    def disconnect_remote(self) -> None:
        """Go back to the local model (if one is loaded)."""
        if self._remote is None or self.busy:
            return
        self._remote.close()
        self._remote = None
        self.remote_caps = None
        self.model_info = self._local_info
        if self._local_info is not None:
            self.modelLoaded.emit(self._local_info)
        self._set_state(self._idle_state())

    # ------------------------------------------------------------------ generation
    def generate(self, prompt: str, settings: SamplerSettings, *, messages: list[dict] | None = None) -> Job | None:
        """Generate to the end on the worker; steps arrive through ``stepsAdded``. With a
        remote server connected in chat mode, ``messages`` is the conversation."""
        if not self._check_ready(prompt, settings):
            return None
        self._end_step_mode()
        self.trace = Trace(prompt=prompt, settings=settings, model_name=self.model_info.name)
        self._start_saving(self.trace)
        self.traceReset.emit(self.trace)
        backend = self._backend
        remote = self._remote
        chat = bool(self.remote_config and self.remote_config.chat)

        def job(cancel: threading.Event) -> Iterator[object]:
            if remote is not None:
                yield from remote.stream(
                    None if chat else prompt, settings, messages=messages if chat else None,
                    cancel=cancel, on_wait=lambda left, why: self.waitCountdown.emit(float(left), str(why)),
                )
                return
            session = GenerationSession(backend, prompt, settings, on_logits=keep)
            yield from session.run(cancel)

        keep = self._memory_for_new_run()
        self._gen_job = self._submit(job, JobKind.GENERATE, State.GENERATING)
        return self._gen_job

    @property
    def local_engine(self):
        """The Workbench's local backend (None without a local model or with a server connected);
        the GUI thread may use its tokenizer and token texts only while the model worker is idle."""
        return self._backend if self._remote is None else None

    def xray(self, prompt: str, settings: SamplerSettings) -> Job | None:
        """The prompt X-ray: every prompt token scored by the model given what precedes it
        (``app.core.scoring``), on the model worker; shown as a trace of its own (each token's
        probability, rank, alternatives and surprisal) and announced by ``xrayDone``."""
        if not self._check_ready(prompt, settings):
            return None
        remote = self._remote
        if remote is not None and not self.capabilities.prompt_logprobs:
            self._fail(XrayUnavailable(f"The prompt X-ray {self.capabilities.why_not('prompt_logprobs')}."))
            return None
        self._end_step_mode()
        backend = self._backend
        self._xray_settings = settings
        top_n = max(1, min(settings.top_n, 20))

        def job(cancel: threading.Event) -> Iterator[object]:
            from app.core.scoring import score_remote, score_text

            if remote is not None:  # a server that echoes prompt log-probabilities (the probe saw it)
                return score_remote(remote, prompt, top_n=top_n, cancel=cancel)
            return score_text(backend, prompt, top_n=top_n, cancel=cancel)
            yield  # a generator: the worker runs it, the result is its return value

        return self._submit(job, JobKind.XRAY, State.GENERATING)

    def recompute_logits(self) -> Job | None:
        """The shown finished run evaluated again through the local model, teacher-forced on its
        tokens (``app.core.whatif.recompute_logits``, on the model worker), so that the what-if
        and "Apply to this run" work on a run whose logits are not kept (a stored run, a lab
        generation, one the memory bound pushed out). Announced by ``logitsRecomputed``; None
        (and ``failed`` says why) when it cannot be done."""
        trace, engine = self.trace, self.local_engine
        if self.busy or trace is None or not trace.steps or trace.finished is None:
            return None
        if engine is None:
            self._fail(WhatIfUnavailable("The what-if recomputes a run through a local model: load one (a server "
                                         "gives no full distributions)."))
            return None
        if trace.model_name and self.model_info is not None and trace.model_name != self.model_info.name:
            self._fail(WhatIfUnavailable(f"This run was made with {trace.model_name}; the loaded model is "
                                         f"{self.model_info.name}. Load that model to try other settings on the run."))
            return None
        self._memory_runs += 1
        key = self._memory_runs
        memory, prompt, steps = self.logit_memory, trace.prompt, list(trace.steps)

        def job(cancel: threading.Event) -> Iterator[object]:
            from app.core.whatif import recompute_logits

            return key, trace, recompute_logits(engine, memory, key, prompt, steps, cancel=cancel)
            yield  # a generator: the worker runs it, the result is its return value

        # the state stays as it is: the recomputation gives way to a generation or a step the user
        # asks for (``_check_ready`` cancels it), and the window's controls stay as they are
        self._recompute_job = self._submit(job, JobKind.RECOMPUTE, self._state)
        return self._recompute_job

    def _recomputed(self, result) -> None:
        self._recompute_job = None
        key, trace, n = result
        if trace is self.trace and n == len(trace.steps):  # still the shown run, and not stopped midway
            self.trace_memory_key = key
            self.logitsRecomputed.emit(n)

    def _show_xray(self, result) -> None:
        # the prompt's own tokens are the trace's steps (its first token, the BOS, has no score)
        trace = Trace(prompt="", settings=self._xray_settings, model_name=result.model)
        trace.extend(result.steps())
        self.trace = trace
        self.trace_memory_key = None
        self.traceReset.emit(trace)
        self.traceOpened.emit(trace)
        self.stepsAdded.emit()
        self.xrayDone.emit(result)

    def _memory_for_new_run(self):
        """The ``on_logits`` of a new local run: its steps' logits go to ``logit_memory`` (on the
        model worker), under a new key that the shown trace now has."""
        self._memory_runs += 1
        key = self._memory_runs
        self.trace_memory_key = key
        memory = self.logit_memory

        def keep(session: GenerationSession, index: int, logits) -> None:
            if index == 0:
                memory.start(key, session.prompt_tokens)
            memory.put(key, index, logits)

        return keep

    def step(self, prompt: str, settings: SamplerSettings, token_id: int | None = None) -> Job | None:
        """Step mode: take one token (``token_id`` or sampled), then show the next
        distribution as pending. The first call starts a new run."""
        if self._state == State.GENERATING:
            return None
        if self._remote is not None and not self.capabilities.step_mode:
            self._fail(StepModeUnavailable(f"Step mode {self.capabilities.why_not('step_mode')}."))
            return None
        if self._session is None or self._session.finished is not None:
            if not self._check_ready(prompt, settings):
                return None
            self._session = GenerationSession(self._backend, prompt, settings, on_logits=self._memory_for_new_run())
            self.trace = Trace(prompt=prompt, settings=settings, model_name=self.model_info.name)
            self._start_saving(self.trace)
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
                result.to_step(
                    best,
                    index=len(session.steps),
                    position=session.position,
                    text="",
                    piece=session.engine.piece(best),
                    piece_of=session.engine.piece,
                )
            )

        return self._submit(job, JobKind.STEP, State.STEPPING)

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

    def _cancel_recompute(self) -> None:
        """Stop a running ``recompute_logits`` job; its end is then ignored (it keeps nothing)."""
        job, self._recompute_job = self._recompute_job, None
        if job is not None and self._jobs.pop(job.id, None) is not None:
            job.cancel.set()
            if not self._jobs:
                self._set_state(self._idle_state())

    def stop(self) -> None:
        """Stop the running generation between two steps; the partial output is kept."""
        self._cancel_recompute()
        if self._gen_job is not None:
            self._gen_job.cancel.set()
        elif self.in_step_mode_run:
            if JobKind.STEP in self._jobs.values():
                self._stop_after_step = True  # the session is busy on the worker: stop after it
                return
            self.finish_step_run()
            self._set_state(self._idle_state())

    def _check_ready(self, prompt: str, settings: SamplerSettings) -> bool:
        if self._backend is None and self._remote is None:
            self._fail(NoModelFailure("Load a model first (File > Open, or wait for the embedded model)."))
            return False
        self._cancel_recompute()  # a background recomputation gives way to what the user asked for
        if self.busy:
            return False
        try:
            require_prompt(prompt)
        except BackendError as exc:
            self._fail(InvalidInputFailure(str(exc), title="Empty prompt"))
            return False
        try:
            settings.validate()
        except ValueError as exc:
            self._fail(InvalidInputFailure(str(exc)))
            return False
        return True

    # ------------------------------------------------------------------ worker results
    def _on_yielded(self, job_id: int, item: object) -> None:
        kind = self._jobs.get(job_id)
        if kind is None:
            return  # stale
        if isinstance(item, LoadProgress):
            self.loadProgress.emit(item.done, item.total, item.what)
        elif isinstance(item, Step):
            if self.trace is not None:
                self.trace.append(item)
                if self._saver is not None:
                    self._saver.add(item)
                self.stepsAdded.emit()
        elif isinstance(item, Pending):
            self.pendingChanged.emit(item.step)
        elif isinstance(item, Finished):
            # Finished is a job's last value: the model is free from now on, so the state changes
            # before anyone hears of the end (a Step pressed right after Stop must not be lost)
            self._jobs.pop(job_id, None)
            if kind == JobKind.GENERATE:
                self._gen_job = None
            if kind == JobKind.STEP:
                self._session = None
            if not self._jobs:
                self._set_state(self._idle_state())
            self.pendingChanged.emit(None)
            self._finish_trace(item)

    def _start_saving(self, trace: Trace) -> None:
        """Save ``trace`` as it is made (its row on the first step, each step as it arrives):
        a crash or a kill keeps the run up to its last saved step."""
        self._saver = None
        if self.writer is None:
            return
        info = self.model_info
        head = RunHead(prompt=trace.prompt, settings=trace.settings, model_name=info.name if info else "",
                       model_path=str(info.path) if info else None, model_sha256=self.model_sha256 or None)

        def started(run_id: int) -> None:
            trace.run_id = run_id

        self._saver = RunSaver(self.writer, head, on_saved=self.runSaved.emit, on_started=started)

    def _finish_trace(self, fin: Finished) -> None:
        if self.trace is None:
            return
        self.trace.finished = fin
        self.last_tokens_per_s = fin.tokens_per_s
        if self._saver is not None:
            self._saver.finish(fin)
            self._saver = None
        self.generationFinished.emit(fin)

    def _on_done(self, job_id: int, result: object) -> None:
        kind = self._jobs.pop(job_id, None)
        if isinstance(result, Loaded):
            backend, model_file = result.backend, result.model_file
            old = self._backend
            self._backend = backend
            self._local_info = backend.info
            if self._remote is not None:  # loading a local model switches back to it
                self._remote.close()
                self._remote = None
                self.remote_caps = None
            self.model_info = backend.info
            self.model_sha256 = ""
            self._hash_in_background(model_file)
            if old is not None:
                old.close()  # safe: the worker is idle between jobs and we are its only user
            self.modelLoaded.emit(backend.info)
        elif kind == JobKind.XRAY and result is not None:
            self._show_xray(result)

        elif isinstance(result, Probed) and kind == JobKind.TEST:
            self.remoteTested.emit(result.models, result.caps)
        elif isinstance(result, Probed):
            backend, models, caps, model = result.backend, result.models, result.caps, result.model
            if self._remote is not None:
                self._remote.close()
            self._remote = backend
            self.remote_caps = caps
            self.remote_config = self._pending_remote_config
            self.model_info = _remote_info(self.remote_config, model)
            self.model_sha256 = ""
            self.remoteTested.emit(models, caps)
            self.remoteConnected.emit(caps)
            self.modelLoaded.emit(self.model_info)
        if kind == JobKind.GENERATE:
            self._gen_job = None
        if not self._jobs:
            if kind == JobKind.STEP and self._stop_after_step:
                self._stop_after_step = False
                self.finish_step_run()
            self._set_state(self._idle_state())
            if kind in (JobKind.STEP, JobKind.LENS) and self.in_step_mode_run:
                self._set_state(State.STEPPING)
        if kind == JobKind.RECOMPUTE and result is not None:  # announced once the model is free again
            self._recomputed(result)

    def _on_failed(self, job_id: int, exc: object, tb: str) -> None:
        kind = self._jobs.pop(job_id, None)
        if kind == JobKind.GENERATE:
            self._gen_job = None
        if kind == JobKind.RECOMPUTE:
            self._recompute_job = None
        if kind == JobKind.STEP:
            self._session = None
            self.pendingChanged.emit(None)
        failure: WorkbenchFailure
        if isinstance(exc, BackendError):
            msg = str(exc)
            if kind == JobKind.LOAD and self._backend is not None:
                msg += f"\n\nStill using {self.model_info.name}."
            failure = failure_for_job(kind, msg)
        else:
            what = {JobKind.LOAD: "Loading the model", JobKind.GENERATE: "The generation", JobKind.STEP: "The step",
                    JobKind.TEST: "Testing the connection", JobKind.CONNECT: "Connecting", JobKind.XRAY: "The prompt X-ray",
                    JobKind.RECOMPUTE: "Recomputing the run", JobKind.LENS: "The layer lens"}.get(kind, "The operation")
            failure = UnexpectedFailure(describe_unexpected(exc, what), tb)
            log.error("worker job failed: %s", tb)
        # keep what was produced: a failed generation still ends its trace
        if kind in (JobKind.GENERATE, JobKind.STEP) and self.trace is not None and self.trace.finished is None:
            self._finish_trace(
                Finished("error", self.trace.text, len(self.trace), 0.0, message=failure.message)
            )
        if not self._jobs:
            self._set_state(State.STEPPING if kind == JobKind.LENS and self.in_step_mode_run else self._idle_state())
        self._fail(failure)

    # ------------------------------------------------------------------ history
    def open_run(self, run_id: int) -> Trace | None:
        if self.store is None:
            return None
        try:
            trace = self.store.load_run(run_id)
        except Exception as exc:  # noqa: BLE001
            self._fail(RunNotOpened(str(exc)))
            return None
        self.trace = trace
        self.trace_memory_key = None  # a stored run: its logits are not in memory
        self.traceReset.emit(trace)
        self.traceOpened.emit(trace)
        self.stepsAdded.emit()
        return trace

    def open_trace(self, trace: Trace) -> bool:
        """Show ``trace`` (a generation made in a lab, or reopened) in the Workbench views, as a
        reopened run: its prompt, settings, every step. False (and says why) while the Workbench
        is busy."""
        if self.busy:
            self._fail(BusyFailure("Stop the running generation (Esc) before opening another one."))
            return False
        self._end_step_mode()
        self.trace = trace
        self.trace_memory_key = None  # an opened generation: its logits are not in memory
        self.traceReset.emit(trace)
        self.traceOpened.emit(trace)
        self.stepsAdded.emit()
        return True

    def lab_source(self) -> tuple[LabSource | None, str]:
        """The model the labs use now (the connected server, else the loaded local model) and,
        when there is none, the reason in words a user can act on."""
        if self._remote is not None and self.remote_config is not None:
            cfg = self.remote_config
            return LabSource(self.model_info.name if self.model_info else cfg.base_url, self._remote.capabilities,
                             config=cfg, caps=self.remote_caps, max_parallel=self.max_parallel_remote), ""
        info = self._local_info
        if info is None or self._backend is None:
            if self._state == State.LOADING:
                return None, "The model is still loading; the lab can run once it is ready."
            return None, "Load a model (Model tab) or connect to a server (Server tab) first."
        return LabSource(info.name, self._backend.capabilities, model_path=info.path, model=self._backend.model,
                         n_ctx=info.n_ctx or 2048, n_threads=info.n_threads or None,
                         model_sha256=self.model_sha256 or None, max_parallel=self.max_parallel), ""

    def shutdown(self) -> None:
        self.labs.shutdown()
        self.worker.shutdown()
        if self._saver is not None and self.trace is not None:  # closed mid-run: keep what was made
            self._saver.finish(Finished("cancelled", self.trace.text, len(self.trace), 0.0,
                                        message="Samplescope was closed during the run; the partial output is kept."))
            self._saver = None
        if self.writer is not None:
            self.writer.shutdown()
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None


def _remote_info(config: RemoteConfig | None, model: str) -> ModelInfo:
    """A model card for a remote model: what the server tells (little)."""
    url = config.base_url if config else ""
    return ModelInfo(
        path=url, name=model or "remote model", architecture="remote (OpenAI-compatible)",
        size_label="", quantization="", n_vocab=0, n_ctx_train=0, n_layers=0, file_size=0,
        has_chat_template=bool(config and config.chat),
    )
