"""The layer lens's jobs on the model worker, for the window.

Owns ``LensJobs`` (a step's lens or a whole run's, computed by ``app.core.lens.lens_run`` as a
job of kind ``JobKind.LENS`` on the controller's model worker, one job at a time; what the job
yields reaches the window as signals) and ``LensNote`` (words a job says on its way: the output
head being read, with the memory it takes, before it is loaded). The job leaves the Workbench's
state as it is and gives way: a new run, a reopened run or a model load cancels it (between two
steps). A lens that cannot be shown (a server, a run of another model, a server's run without
token ids, a refused self-check) fails with the reason through the controller's banner
(``LensUnavailableFailure``). The run's own tokens are teacher-forced on a lens context of its
own: the Workbench's context never has an eval callback.

Lives on the GUI thread; the job's body runs on the model worker.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

from PySide6.QtCore import QObject, Signal

from app.core.lens import LensCheck, StepLens
from app.workbench_control import JobKind, LensUnavailableFailure, State

__all__ = ["LensJobs", "LensNote"]


@dataclass(frozen=True)
class LensNote:
    """What a lens job is doing, in words (shown while it works)."""

    text: str


class LensJobs(QObject):
    """See the module docstring. ``lensReady(trace, StepLens)`` for each step as it is made,
    ``checked(LensCheck)`` once a job has run the self-check, ``note(text)``, and
    ``ended(trace, kind, n_done, cancelled)`` when a job is over (also after a failure)."""

    lensReady = Signal(object, object)
    checked = Signal(object)
    note = Signal(str)
    ended = Signal(object, str, int, bool)

    def __init__(self, controller, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.controller = controller
        self._job = None
        self._trace = None
        self._kind = ""
        self._done = 0
        w = controller.worker
        w.yielded.connect(self._on_yielded)
        w.done.connect(self._on_done)
        w.failed.connect(self._on_failed)
        controller.traceReset.connect(lambda _t: self.stop())
        controller.stateChanged.connect(self._on_state)

    @property
    def running(self) -> bool:
        return self._job is not None

    @property
    def kind(self) -> str:
        """"step" or "run" while a job runs ("" otherwise)."""
        return self._kind if self._job is not None else ""

    def why_not(self) -> str:
        """"" when the shown run's lens can be computed now, else why not (a sentence)."""
        c = self.controller
        caps = c.capabilities
        trace = c.trace
        if c.local_engine is None:
            return f"The layer lens {caps.why_not('layer_lens')}." if caps.kind != "none" else \
                "Load a model first (the layer lens runs on a local model)."
        if trace is None or not trace.steps:
            return "Generate a run (or open one) first: the lens shows how each of its tokens was chosen."
        if c.state in (State.GENERATING, State.LOADING):
            return "Wait for the run to finish (or stop it, Esc): the lens works on the tokens it made."
        if trace.model_name and c.model_info is not None and trace.model_name != c.model_info.name:
            return (f"This run was made with {trace.model_name}; the loaded model is {c.model_info.name}. Load that "
                    "model to see the run's layers.")
        if any(s.token_id is None for s in trace.steps):
            return "The layer lens needs the run's token ids, which a server's run does not have."
        return ""

    def start(self, indices: Sequence[int] | None, *, top_n: int = 5):
        """The lens of the shown run's steps ``indices`` (None: every step) on the model worker;
        None (and the banner says why) when it cannot be computed now."""
        c = self.controller
        why = self.why_not()
        if why:
            c._fail(LensUnavailableFailure(why))
            return None
        self.stop()
        trace, engine = c.trace, c.local_engine
        steps = list(trace.steps)
        prompt = trace.prompt
        wanted = None if indices is None else sorted({int(i) for i in indices})
        top = max(1, min(int(top_n), 20))

        def job(cancel: threading.Event) -> Iterator[object]:
            from app.core.lens import lens_run, steps_tokens
            from app.core.whatif import run_prompt_tokens
            from backends.output_head import head_spec, loaded_head

            if loaded_head(engine.model) is None:
                spec = head_spec(engine.model.path)
                yield LensNote(f"Reading the output head from the model file once: {spec.describe()}…")
            prompt_tokens = run_prompt_tokens(engine, prompt, steps)
            tokens = steps_tokens(steps)
            checks: list[LensCheck] = []
            n = 0
            for rec in lens_run(engine, prompt_tokens, tokens, indices=wanted, top_n=top, cancel=cancel,
                                on_check=checks.append):
                while checks:
                    yield checks.pop()
                n += 1
                yield rec
            return n

        # the state stays as it is (as the what-if's recomputation): the lens gives way to what
        # the user starts next (``traceReset`` and a generation's state cancel it)
        self._trace, self._kind, self._done = trace, "step" if wanted is not None and len(wanted) == 1 else "run", 0
        self._job = c._submit(job, JobKind.LENS, c.state)
        return self._job

    def stop(self) -> None:
        """Cancel the running job (it stops after the current step; what it made is kept)."""
        if self._job is not None:
            self._job.cancel.set()

    def _on_state(self, state: str) -> None:
        if state in (State.GENERATING, State.LOADING):
            self.stop()

    # ------------------------------------------------------------------ worker results
    def _ours(self, job_id: int) -> bool:
        return self._job is not None and job_id == self._job.id

    def _on_yielded(self, job_id: int, item: object) -> None:
        if not self._ours(job_id):
            return
        if isinstance(item, StepLens):
            self._done += 1
            self.lensReady.emit(self._trace, item)
        elif isinstance(item, LensCheck):
            self.checked.emit(item)
        elif isinstance(item, LensNote):
            self.note.emit(item.text)

    def _end(self, cancelled: bool) -> None:
        job, trace, kind, done = self._job, self._trace, self._kind, self._done
        self._job, self._trace, self._kind = None, None, ""
        if job is not None:
            self.ended.emit(trace, kind, done, cancelled or job.cancel.is_set())

    def _on_done(self, job_id: int, _result: object) -> None:
        if self._ours(job_id):
            self._end(False)

    def _on_failed(self, job_id: int, _exc: object, _tb: str) -> None:
        if self._ours(job_id):  # the controller's banner says why
            self._end(True)
