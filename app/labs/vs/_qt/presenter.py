"""The Verbalized Sampling lab in the window: joins ``VSLabPanel`` to the lab runner.

Owns: ``VSLab`` — reads the panel's knobs and the Sampling dock's sampler settings, checks
them, builds the job bodies (one run with "what the model says vs does", or a Direct-vs-method
comparison over N runs) and hands them to ``controller.labs`` (the "lab-worker" thread); feeds
records, summaries and errors back to the panel. Params, records and summaries are the lab's
typed values (``app.labs.vs.records``): ``VSParams`` go to the runner, the engine's
``VSRunRecord`` and ``VSSummary`` (None after a single run) come back to the panel as they
are, and a stored run is read through ``RECORDS``. GUI thread; the job bodies run on the lab
worker and only touch the lab's engine.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace
from typing import Callable

from app.labs.vs.engine import iter_compare, single_run_record
from app.labs.vs.records import RECORDS, Mode, VSParams
from app.labs.vs.reference import load_us_state_reference
from app.lab_presenter import LabPresenter
from backends.base import SamplerSettings
from widgets.sampling_panel import describe_chain
from app.labs.vs._qt.panel import VSLabPanel

__all__ = ["VSLab", "make_engine"]


def make_engine(source):
    """The VS lab's engine for a ``LabSource``: sequences of a context on the loaded model, or
    the server's client (lab worker; the registry's ``LabSpec.engine``)."""
    from app.labs.vs.engine import LocalVSEngine, RemoteVSEngine

    if source.local:
        return LocalVSEngine(source.model, n_ctx=source.n_ctx, n_threads=source.n_threads,
                             max_parallel=source.max_parallel)
    return RemoteVSEngine(source.open(), source.caps, max_parallel=source.max_parallel)


class VSLab(LabPresenter):
    KIND = "vs"

    def __init__(self, panel: VSLabPanel, controller, settings_provider: Callable[[], SamplerSettings]) -> None:
        super().__init__(panel, controller)
        self._settings = settings_provider
        panel.runOnceRequested.connect(self.run_once)
        panel.compareRequested.connect(self.compare)
        panel.stopRequested.connect(self.stop)

    # ------------------------------------------------------------------ starting
    def _prepare(self):
        """(source, sampler settings) or None after telling the user what is missing."""
        source = self.source()
        if source is None:
            return None
        p = self.panel.params()
        try:
            settings = replace(self._settings(), max_tokens=p.max_tokens)
            settings.validate()
        except ValueError as exc:
            self.panel.show_status(f"Sampler settings: {exc}")
            return None
        self.panel.set_sampler_note(describe_chain(settings) + f"; seed {settings.seed}")
        caps = source.capabilities
        self.panel.set_model_does_available(
            caps.full_logits, "What the model does (its own probability of each candidate) "
            + caps.why_not("full_logits") + ".")
        return source, settings

    def run_once(self) -> None:
        ready = self._prepare()
        if ready is None:
            return
        source, settings = ready
        try:
            request = self.panel.request()
        except ValueError as exc:
            self.panel.show_status(str(exc))
            return
        p = self.panel.params()
        labs = self.labs

        def body(cancel: threading.Event):
            engine = labs.engine(source, "vs")
            yield single_run_record(engine, request, settings, settings.seed, tau=p.tau, cancel=cancel)
            return None

        self._start("once", f"{p.method} once: {p.prompt}", VSParams.of(p, "once", settings), body, source,
                    expected=1)

    def compare(self) -> None:
        ready = self._prepare()
        if ready is None:
            return
        source, settings = ready
        p = self.panel.params()
        if p.method == "Direct":
            self.panel.show_status("Choose the method to compare with Direct (VS-Standard, for instance).")
            return
        try:
            vs_request = self.panel.request()
            direct_request = self.panel.request("Direct")
        except ValueError as exc:
            self.panel.show_status(str(exc))
            return
        reference = load_us_state_reference() if p.reference == "us-states" else None
        labs = self.labs

        def body(cancel: threading.Event):
            engine = labs.engine(source, "vs")
            result = yield from iter_compare(
                engine, p.prompt, p.method, p.k, p.n, p.t, p.tau, settings, settings.seed,
                cancel, reference, p.reference, p.style, p.direct_max_tokens, direct_request, vs_request)
            return result.summary(engine.name)

        self._start("compare", f"Direct vs {p.method}: {p.prompt}", VSParams.of(p, "compare", settings), body,
                    source, expected=2 * p.n, reference=reference)

    def replay(self, exp) -> None:
        """A stored run, typed (the window reads it through ``RECORDS``; a run straight from the
        store, with dicts, is read here the same way), into the results of its mode."""
        if isinstance(exp.params, Mapping):
            exp = RECORDS.read_experiment(exp)
        params: VSParams = exp.params
        reference = load_us_state_reference() if params.reference == "us-states" else None
        self.panel.start_results("compare" if params.mode == "compare" else "once", reference)
        super().replay(exp)

    def _start(self, kind: Mode, title: str, params: VSParams, body, source, *, expected: int,
               reference=None) -> None:
        self.panel.start_results(kind, reference)
        self.start(kind, title, params, body, source, expected)
