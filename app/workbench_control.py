"""The typed control flow of the Workbench: its states, its job kinds, the values its jobs yield,
and one exception type per kind of failure the window reacts to.

Owns: ``State`` (what the Workbench is doing), ``JobKind`` (what a model-worker job is),
``LoadProgress`` and ``Pending`` (values a job yields), ``Loaded`` and ``Probed`` (what a load
or a server job returns), and the ``WorkbenchFailure`` tree. The
controller reports a failure as an instance of one of these classes; the window decides what to
do from the class (``isinstance``), never from the words: a failure's ``title`` and message
are for people and may change freely.

``State`` and ``JobKind`` are ``StrEnum``s, so a state compares equal to its word ("ready")
and reads well in logs. Qt-free; the values are created on the model worker or the GUI thread
and only read after that (frozen).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "State", "JobKind", "LoadProgress", "Pending", "Loaded", "Probed",
    "WorkbenchFailure", "BusyFailure", "NoModelFailure", "InvalidInputFailure", "ModelLoadFailure",
    "ConnectionFailure", "ConnectionSettingsFailure", "GenerationFailure", "StepFailure", "StepModeUnavailable",
    "XrayUnavailable",
    "WhatIfUnavailable", "LensUnavailableFailure",
    "RunNotOpened", "NotSaved", "LabFailure", "UnexpectedFailure", "failure_for_job",
]


class State(enum.StrEnum):
    """What the Workbench is doing (``WorkbenchController.state``)."""

    NO_MODEL = "no model"
    LOADING = "loading"  # a model loads or a server is being tried
    READY = "ready"
    GENERATING = "generating"
    STEPPING = "stepping"  # a step-mode run is open


class JobKind(enum.StrEnum):
    """What a job on the model worker does."""

    LOAD = "load"
    TEST = "test"  # try a server (list its models, probe it); nothing changes
    CONNECT = "connect"
    GENERATE = "generate"
    STEP = "step"
    XRAY = "xray"  # score the prompt's own tokens (the prompt X-ray)
    RECOMPUTE = "recompute"  # evaluate a shown run again to keep its steps' logits (the what-if)
    LENS = "lens"  # the layer lens of a step or of a whole run (app.lens_jobs)


@dataclass(frozen=True, slots=True)
class LoadProgress:
    """Progress of a load or connect job: ``done`` of ``total`` (0 of 0: no measure), ``what``."""

    done: int
    total: int
    what: str


@dataclass(frozen=True, slots=True)
class Pending:
    """Step mode: the distribution of the next, not yet chosen, token. ``step.token_id`` is the
    most likely token under the chain."""

    step: object  # backends.base.Step


@dataclass(frozen=True)
class Loaded:
    """What a load job returns: the opened local backend and its model file."""

    backend: object  # backends.llama_local.LlamaCppBackend
    model_file: str


@dataclass(frozen=True)
class Probed:
    """What a test or connect job returns: the server's models, what it can do (its probe),
    the model chosen, and (connect only) the open backend."""

    models: list
    caps: object  # backends.openai_compat.ServerCapabilities
    model: str
    backend: object | None = None


class WorkbenchFailure(Exception):
    """A failure the user is told about: ``title`` (a few words, the banner's start) and the
    message (``str(failure)``, a sentence the user can act on)."""

    title = "Error"

    def __init__(self, message: str, *, title: str | None = None) -> None:
        super().__init__(message)
        if title is not None:
            self.title = title

    @property
    def message(self) -> str:
        return str(self)


class BusyFailure(WorkbenchFailure):
    title = "Busy"


class NoModelFailure(WorkbenchFailure):
    title = "No model"


class InvalidInputFailure(WorkbenchFailure):
    """A prompt or a setting that cannot be used (the title says which)."""

    title = "Invalid setting"


class ModelLoadFailure(WorkbenchFailure):
    """A model was not loaded (the previous one, if any, is still in use): the model panel shows it."""

    title = "Model not loaded"


class ConnectionFailure(WorkbenchFailure):
    """A server could not be reached or used: the connection panel shows it."""

    title = "Connection failed"


class ConnectionSettingsFailure(WorkbenchFailure):
    title = "Connection settings"


class GenerationFailure(WorkbenchFailure):
    title = "Generation failed"


class StepFailure(WorkbenchFailure):
    title = "Step failed"


class StepModeUnavailable(WorkbenchFailure):
    title = "Step mode unavailable"


class WhatIfUnavailable(WorkbenchFailure):
    """The shown run cannot be recomputed for the what-if (another model, no local model, a run
    that does not tokenize as it did)."""

    title = "What-if unavailable"


class XrayUnavailable(WorkbenchFailure):
    title = "Prompt X-ray unavailable"


class LensUnavailableFailure(WorkbenchFailure):
    """The layer lens cannot be shown (a server, another model's run, a refused self-check)."""

    title = "Layer lens unavailable"


class RunNotOpened(WorkbenchFailure):
    title = "Run not opened"


class NotSaved(WorkbenchFailure):
    title = "Not saved"


class LabFailure(WorkbenchFailure):
    title = "Lab run failed"


class UnexpectedFailure(WorkbenchFailure):
    """A bug, not a user error: ``details`` holds the traceback (behind the banner's Details)."""

    title = "Unexpected error"

    def __init__(self, message: str, details: str = "", *, title: str | None = None) -> None:
        super().__init__(message, title=title)
        self.details = details


_JOB_FAILURES: dict[JobKind, type[WorkbenchFailure]] = {
    JobKind.LOAD: ModelLoadFailure, JobKind.GENERATE: GenerationFailure, JobKind.STEP: StepFailure,
    JobKind.TEST: ConnectionFailure, JobKind.CONNECT: ConnectionFailure, JobKind.XRAY: GenerationFailure,
    JobKind.RECOMPUTE: WhatIfUnavailable, JobKind.LENS: LensUnavailableFailure,
}


def failure_for_job(kind: JobKind | None, message: str) -> WorkbenchFailure:
    """The failure of a job of ``kind`` that raised a ``BackendError`` with ``message``."""
    cls = _JOB_FAILURES.get(kind) if kind is not None else None
    return (cls or WorkbenchFailure)(message)
