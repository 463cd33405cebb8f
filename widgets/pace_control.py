"""The pace of presentation mode: ``PaceControl`` (a slider of tokens per second, with "one token
per click" at its left end, a "Next token" button and how many tokens are waiting). GUI thread.

It only shows and asks: ``rateChanged(rate)`` (0 = one token per click) and ``nextRequested``;
the window keeps the display queue (``app.display_pace``).
"""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QSlider, QWidget

from widgets.steady_label import SteadyLabel

__all__ = ["PaceControl", "pace_text"]


def pace_text(rate: float) -> str:
    """A pace in words: "one token per click", "1 token/s", "2.5 tokens/s"."""
    if rate <= 0:
        return "one token per click"
    return f"{rate:g} token/s" if rate == 1 else f"{rate:g} tokens/s"


class PaceControl(QWidget):
    #: the chosen pace in tokens per second (0: one token per click)
    rateChanged = Signal(float)
    #: the user asked for the next token (the button)
    nextRequested = Signal()

    def __init__(self, steps: Sequence[float], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._steps = tuple(float(s) for s in steps)
        if not self._steps:
            raise ValueError("a pace control needs at least one pace")
        caption = QLabel("Pace")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, len(self._steps) - 1)
        self.slider.setPageStep(1)
        self.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.slider.setMinimumWidth(140)
        self.slider.setToolTip(
            "How fast the generated tokens appear: the model generates at full speed, the window shows its "
            "tokens at this pace (left end: one token per click, Space or Right arrow)")
        self.value_label = QLabel()
        self.value_label.setTextFormat(Qt.TextFormat.PlainText)
        self.next_button = QPushButton("Next token")
        self.next_button.setToolTip("Show the next generated token (or click the text, press Space or Right arrow)")
        self.waiting_label = SteadyLabel()  # changes on every token while a run streams
        self.waiting_label.setToolTip("Tokens generated and not shown yet")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(caption)
        lay.addWidget(self.slider, 1)
        lay.addWidget(self.value_label)
        lay.addWidget(self.next_button)
        lay.addWidget(self.waiting_label)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        self.slider.valueChanged.connect(self._on_slider)
        self.next_button.clicked.connect(self.nextRequested)
        self._fit_value_label()
        self._on_slider(self.slider.value(), emit=False)
        self.set_waiting(0)

    def _fit_value_label(self) -> None:
        fm = self.value_label.fontMetrics()
        self.value_label.setMinimumWidth(max(fm.horizontalAdvance(pace_text(s)) for s in self._steps) + 4)

    def changeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        if event.type() == QEvent.Type.FontChange:
            self._fit_value_label()
        super().changeEvent(event)

    def rate(self) -> float:
        return self._steps[self.slider.value()]

    def set_rate(self, rate: float) -> None:
        """Move the slider to the pace nearest ``rate`` (emits ``rateChanged`` when it moves)."""
        best = min(range(len(self._steps)), key=lambda i: abs(self._steps[i] - float(rate)))
        self.slider.setValue(best)

    def set_waiting(self, n: int) -> None:
        """How many generated tokens are held."""
        self.waiting_label.setText(f"{n} waiting" if n else "")
        self.next_button.setEnabled(n > 0)

    def _on_slider(self, index: int, emit: bool = True) -> None:
        rate = self._steps[index]
        self.value_label.setText(pace_text(rate))
        if emit:
            self.rateChanged.emit(rate)
