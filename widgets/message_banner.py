"""The message banner above the window's tabs: what went wrong, in words, and nothing lost.

Owns: ``MessageBanner``. Messages pile up instead of replacing each other (a settings warning
and a history warning at start-up are both shown), a repeated message is shown once, a
"sticky" message (what the app found at start-up) stays until the user dismisses it while the
others go when the next action starts, and an
unexpected error carries its technical report behind a "Details" button (plain text, to copy
into a bug report) so that a traceback is never the message. Everything is plain text. GUI
thread only.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget

__all__ = ["MessageBanner", "MAX_MESSAGES"]

#: The oldest messages go first when more than this many pile up.
MAX_MESSAGES = 6


class MessageBanner(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._messages: list[str] = []
        self._sticky: set[str] = set()
        self._details: list[str] = []
        self.setObjectName("messageBanner")
        self.setAttribute(Qt.WA_StyledBackground, True)  # paint the style sheet's background
        self.setStyleSheet("#messageBanner { background: #fde7e9; border-radius: 3px; }"
                           "#messageBanner QLabel { color: #5c0011; }")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 4, 4, 4)
        row = QHBoxLayout()
        self.label = QLabel()
        self.label.setTextFormat(Qt.PlainText)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        row.addWidget(self.label, 1)
        self.details_button = QToolButton()
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.details_button.setToolTip("Show the technical report of the error (to copy into a bug report)")
        self.details_button.toggled.connect(self._show_details)
        row.addWidget(self.details_button, 0, Qt.AlignTop)
        self.copy_button = QToolButton()
        self.copy_button.setText("Copy")
        self.copy_button.setToolTip("Copy the messages and the technical report to the clipboard")
        self.copy_button.clicked.connect(self.copy)
        row.addWidget(self.copy_button, 0, Qt.AlignTop)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Dismiss")
        self.close_button.clicked.connect(self.clear)
        row.addWidget(self.close_button, 0, Qt.AlignTop)
        outer.addLayout(row)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setMaximumHeight(180)
        self.details.setVisible(False)
        outer.addWidget(self.details)
        self.setVisible(False)

    # ------------------------------------------------------------------ content
    def add(self, text: str, details: str = "", *, sticky: bool = False) -> None:
        """Show ``text`` (below the messages already shown, unless it is one of them) and keep
        ``details`` behind the Details button. A ``sticky`` message survives ``clear_transient``."""
        text = str(text).strip()
        if text and text not in self._messages:
            self._messages.append(text)
            del self._messages[:-MAX_MESSAGES]
        if text and sticky:
            self._sticky.add(text)
        if details:
            self._details.append(str(details).rstrip())
            del self._details[:-MAX_MESSAGES]
        self._refresh()

    def clear(self) -> None:
        """Every message goes (the dismiss button)."""
        self._messages.clear()
        self._sticky.clear()
        self._details.clear()
        self.details_button.setChecked(False)
        self._refresh()

    def clear_transient(self) -> None:
        """The messages of earlier actions go; the sticky ones (start-up findings) stay."""
        self._messages = [m for m in self._messages if m in self._sticky]
        self._details.clear()
        self.details_button.setChecked(False)
        self._refresh()

    def messages(self) -> list[str]:
        return list(self._messages)

    def text(self) -> str:
        return "\n".join(self._messages) if not self.isHidden() else ""

    def details_text(self) -> str:
        return "\n\n".join(self._details)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText("\n".join(self._messages) + ("\n\n" + self.details_text()
                                                                         if self._details else ""))

    # ------------------------------------------------------------------ drawing
    def _refresh(self) -> None:
        self.label.setText("\n".join(self._messages))
        has_details = bool(self._details)
        self.details_button.setVisible(has_details)
        self.copy_button.setVisible(has_details)
        self.details.setPlainText(self.details_text())
        self.details.setVisible(has_details and self.details_button.isChecked())
        self.setVisible(bool(self._messages))

    def _show_details(self, on: bool) -> None:
        self.details.setVisible(on and bool(self._details))
