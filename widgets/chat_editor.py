"""The chat prompt editor: a list of messages (system, user, assistant) for chat mode.

Owns: ``ChatEditor``. Runs on the GUI thread. Message texts are plain text (QPlainTextEdit).
"""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

__all__ = ["ChatEditor", "ROLES"]

ROLES = ("system", "user", "assistant")


class _MessageRow(QWidget):
    def __init__(self, role: str, content: str, on_remove) -> None:
        super().__init__()
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.role = QComboBox()
        self.role.addItems(ROLES)
        self.role.setCurrentText(role)
        self.role.setToolTip("Who says this message")
        self.text = QPlainTextEdit()
        self.text.setPlainText(content)
        self.text.setFixedHeight(54)
        remove = QToolButton()
        remove.setText("✕")
        remove.setToolTip("Remove this message")
        remove.clicked.connect(lambda: on_remove(self))
        lay.addWidget(self.role)
        lay.addWidget(self.text, 1)
        lay.addWidget(remove)


class ChatEditor(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self._rows_box = QWidget()
        self._rows = QVBoxLayout(self._rows_box)
        self._rows.setContentsMargins(0, 0, 0, 0)
        self._rows.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._rows_box)
        outer.addWidget(scroll, 1)
        add = QPushButton("Add message")
        add.setToolTip("Add a message to the conversation")
        add.clicked.connect(lambda: self.add_message("user", ""))
        outer.addWidget(add)
        self.set_messages([
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Name a colour."},
        ])

    def add_message(self, role: str, content: str) -> None:
        row = _MessageRow(role, content, self._remove)
        self._rows.insertWidget(self._rows.count() - 1, row)

    def _remove(self, row: _MessageRow) -> None:
        self._rows.removeWidget(row)
        row.deleteLater()
        row.setParent(None)

    def _row_widgets(self) -> list[_MessageRow]:
        return [self._rows.itemAt(i).widget() for i in range(self._rows.count())
                if isinstance(self._rows.itemAt(i).widget(), _MessageRow)]

    def messages(self) -> list[dict[str, str]]:
        return [{"role": r.role.currentText(), "content": r.text.toPlainText()} for r in self._row_widgets()]

    def set_messages(self, messages: list[dict[str, str]]) -> None:
        for r in self._row_widgets():
            self._remove(r)
        for m in messages:
            self.add_message(m.get("role", "user"), m.get("content", ""))

    def as_text(self) -> str:
        """A readable one-string version (stored as the run's prompt)."""
        return "\n".join(f"[{m['role']}] {m['content']}" for m in self.messages())
