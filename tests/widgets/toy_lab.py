"""A toy lab, registered by a test the way a new lab is added (its parts here, one ``LabSpec``):
the greedy continuation of a prompt, one record per token, on the real model."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLabel, QListWidget, QVBoxLayout, QWidget

from app.core.records import Record, RecordTypes
from app.core.session import GenerationSession
from app.lab_presenter import LabPresenter
from app.lab_registry import LabSpec
from backends.base import SamplerSettings

SPEC = LabSpec("toy", "Toy lab", "A toy lab added by a test", "tests.widgets.toy_lab:ToyPanel",
               "tests.widgets.toy_lab:ToyLab", ("toy",), "tests.widgets.toy_lab:RECORDS")


# the typed records (a real lab keeps them in app/labs/NAME/records.py)
@dataclass(frozen=True)
class ToyParams(Record):
    prompt: str
    n: int


@dataclass(frozen=True)
class ToyStep(Record):
    i: int
    token: str
    p: float


@dataclass(frozen=True)
class ToySummary(Record):
    text: str
    n: int


RECORDS = RecordTypes(params=ToyParams, records=(ToyStep,), summary=ToySummary)


def toy_records(backend, prompt: str, n: int, cancel: threading.Event):
    """The Qt-free part: one record per greedy token, then the summary."""
    session = GenerationSession(backend, prompt, SamplerSettings(temperature=0.0, max_tokens=n))
    for i, step in enumerate(s for s in session.run(cancel) if hasattr(s, "token_id")):
        yield ToyStep(i, step.token, step.p_raw)
    return ToySummary(session.text, len(session.steps))


class ToyPanel(QWidget):
    openTraceRequested = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self.rows = QListWidget()
        self.status = QLabel()
        self.running = False
        self.summary = None
        lay = QVBoxLayout(self)
        lay.addWidget(self.rows)
        lay.addWidget(self.status)

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    def show_error(self, text: str) -> None:
        self.running = False
        self.status.setText(text)

    def set_running(self, running: bool, total: int = 0) -> None:
        self.running = running

    def add_record(self, record: ToyStep) -> None:
        self.rows.addItem(f"{record.i}: {record.token!r}")

    def show_summary(self, summary, status: str) -> None:
        self.running = False
        self.summary = (summary, status)


class ToyLab(LabPresenter):
    KIND = "toy"

    def __init__(self, panel: ToyPanel, controller, settings_provider=None) -> None:
        super().__init__(panel, controller)

    def run(self, prompt: str = "The capital of France is", n: int = 3) -> None:
        source = self.source()
        if source is None:
            return
        labs = self.labs

        def body(cancel: threading.Event):
            return (yield from toy_records(labs.engine(source), prompt, n, cancel))

        self.panel.rows.clear()
        self.start("run", f"toy: {prompt}", ToyParams(prompt, n), body, source, n)
