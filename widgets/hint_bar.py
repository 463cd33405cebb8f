"""A one-line hint above the window's tabs, dismissed for good with its button.

Owns: ``HintBar`` (plain text, a "Got it" button and a close button; both emit ``dismissed``).
The window shows the first-run hint in it and remembers the dismissal. GUI thread only.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QWidget

from widgets.experiment_card import panel_look, text_color

__all__ = ["HintBar"]



class HintBar(QFrame):
    dismissed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("hintBar")
        panel_look(self, "#fff4d6")  # no style sheet: the fonts follow the application's
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 4, 4)
        self.label = QLabel()
        text_color(self.label, "#3d2c00")
        self.label.setTextFormat(Qt.PlainText)
        self.label.setWordWrap(True)
        row.addWidget(self.label, 1)
        self.ok_button = QPushButton("Got it")
        self.ok_button.setToolTip("Hide this hint; it is not shown again (Help > Shortcuts lists the keys)")
        self.ok_button.clicked.connect(self._dismiss)
        row.addWidget(self.ok_button, 0, Qt.AlignVCenter)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Dismiss: the hint is not shown again")
        self.close_button.clicked.connect(self._dismiss)
        row.addWidget(self.close_button, 0, Qt.AlignVCenter)
        self.setVisible(False)

    def show_hint(self, text: str) -> None:
        self.label.setText(text)
        self.setVisible(True)

    def text(self) -> str:
        return self.label.text() if not self.isHidden() else ""

    def _dismiss(self) -> None:
        self.setVisible(False)
        self.dismissed.emit()
