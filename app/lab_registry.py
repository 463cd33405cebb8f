"""The one list of labs: each lab declares itself here once, and the window, the lab runner, the
History and the command line read it.

Owns: ``LabSpec`` (what a lab is: its name, tab title and tooltip, its panel and presenter, the
run-store kinds it reopens, its typed record types, the engine its jobs use, its command-line subcommand), ``LABS`` (the
registered labs, in tab order), ``register`` and the lookups ``lab_named`` and ``lab_for_kind``.

Adding a lab: write its parts in its own package ``app/labs/NAME/`` (the Qt-free generator and
its typed records, ``records.py`` with a ``RecordTypes``) and ``app/labs/NAME/_qt/`` (a panel, a presenter on ``app.lab_presenter.LabPresenter``)
and add one ``LabSpec`` line to ``LABS``. The parts are named
by import path ("module:attribute") and imported only when used, so this module imports no Qt
and the command line can read it without loading the window. Any thread (read-only after
start-up).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["LabSpec", "LABS", "register", "lab_named", "lab_for_kind", "resolve"]


def resolve(path: str) -> Any:
    """The object ``"package.module:attribute"`` names."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class LabSpec:
    """One lab. ``name`` is its short name (``--lab NAME``, the window's ``NAME_panel`` and
    ``NAME_lab``); ``records`` is the import path of its ``app.core.records.RecordTypes`` (the
typed params, records and summary its runs store; the History reads stored runs through it);
``panel`` and ``presenter`` are import paths of the panel class (made with no
    arguments) and of the presenter class (made with the panel, the controller and the sampling
    settings provider); ``kinds`` are the run-store kinds of its runs (the History reopens them
    here); ``engine`` is the import path of ``make(source)`` building the engine its jobs ask
    the lab runner for (``labs.engine(source, NAME)``), or None when its jobs use a plain
    backend; ``cli`` is the subcommand that runs it headless, if any."""

    name: str
    title: str
    tooltip: str
    panel: str
    presenter: str
    kinds: tuple[str, ...]
    records: str
    engine: str | None = None
    cli: str | None = None

    def record_types(self):
        """The lab's ``RecordTypes``."""
        return resolve(self.records)

    def make_panel(self):
        return resolve(self.panel)()

    def make_presenter(self, panel, controller, settings_provider: Callable):
        return resolve(self.presenter)(panel, controller, settings_provider)

    def make_engine(self, source):
        if self.engine is None:
            return source.open()
        return resolve(self.engine)(source)


LABS: list[LabSpec] = [
    LabSpec("vs", "Verbalized Sampling",
            "Ask for k answers with stated probabilities, compare with Direct prompting over N runs (the VS "
            "paper's metrics)",
            "app.labs.vs._qt.panel:VSLabPanel", "app.labs.vs._qt.presenter:VSLab", ("vs",), "app.labs.vs.records:RECORDS",
            "app.labs.vs._qt.presenter:make_engine", "vs"),
    LabSpec("shift", "Sampled vs ideal",
            "Does a sampled value drift from the average toward an ideal? S = A + alpha_hat (I - A) per concept, "
            "with exact distributions",
            "app.labs.shift._qt.panel:ShiftLabPanel", "app.labs.shift._qt.presenter:ShiftLab", ("shift", "glub"),
            "app.labs.shift.records:RECORDS", "app.labs.shift._qt.presenter:make_engine", "shift"),
    LabSpec("align", "P(token) vs P(task)",
            "Asked for draws from a stated distribution, does the model's next-token distribution follow it, "
            "steadily (E-model) or swinging (D-model)?",
            "app.labs.align._qt.panel:AlignLabPanel", "app.labs.align._qt.presenter:AlignLab", ("align",),
            "app.labs.align.records:RECORDS", None, "align"),
    LabSpec("decoding", "Decoding && branches",
            "Strategies side by side in lockstep (greedy, beam, top-k, top-p, temperature, min-p), the branch "
            "tree of the roads not taken, A/B",
            "app.labs.decoding._qt.panel:DecodingLabPanel", "app.labs.decoding._qt.presenter:DecodingLab", ("decoding",),
            "app.labs.decoding.records:RECORDS", None, "compare"),
]


def register(spec: LabSpec) -> None:
    """Add a lab (after the others); its name and kinds must be new."""
    if any(s.name == spec.name for s in LABS):
        raise ValueError(f"a lab named {spec.name!r} is already registered")
    taken = {k for s in LABS for k in s.kinds}
    if taken & set(spec.kinds):
        raise ValueError(f"run kinds {sorted(taken & set(spec.kinds))} already belong to another lab")
    LABS.append(spec)


def lab_named(name: str) -> LabSpec:
    for spec in LABS:
        if spec.name == name:
            return spec
    raise KeyError(f"no lab named {name!r}; the labs are {', '.join(s.name for s in LABS)}")


def lab_for_kind(kind: str) -> LabSpec | None:
    """The lab whose runs are stored as ``kind``, or None (a kind this version does not know)."""
    for spec in LABS:
        if kind in spec.kinds:
            return spec
    return None
