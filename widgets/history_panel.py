"""The history list: past runs from the run store, newest first.

Owns: ``HistoryPanel``. Runs on the GUI thread. Emits ``openRequested(run_id)`` on a
double-click or Enter; it never touches the store itself.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget, QHBoxLayout

__all__ = ["HistoryPanel"]


class HistoryPanel(QWidget):
    openRequested = Signal(int)
    deleteRequested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.list = QListWidget()
        self.list.setToolTip("Past runs. Double-click (or Enter) to reopen one with its plots.")
        self.list.itemActivated.connect(self._activate)
        lay.addWidget(self.list)
        row = QHBoxLayout()
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(lambda: self._activate(self.list.currentItem()))
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self._delete)
        row.addWidget(self.open_button)
        row.addWidget(self.delete_button)
        lay.addLayout(row)

    def set_runs(self, runs) -> None:
        """``runs``: RunSummary values from ``RunStore.list_runs``."""
        self.list.clear()
        for r in runs:
            when = r.created_at.replace("T", " ")[:19]
            label = f"#{r.id}  {when}  {r.n_tokens} tok  {r.finish_reason}\n{r.prompt_preview}"
            item = QListWidgetItem(label)  # QListWidgetItem text is plain text
            item.setData(Qt.UserRole, r.id)
            item.setToolTip(f"{r.model_name}, {r.tokens_per_s:.1f} tokens/s")
            self.list.addItem(item)

    def run_ids(self) -> list[int]:
        return [self.list.item(i).data(Qt.UserRole) for i in range(self.list.count())]

    def _activate(self, item: QListWidgetItem | None) -> None:
        if item is not None:
            self.openRequested.emit(int(item.data(Qt.UserRole)))

    def _delete(self) -> None:
        item = self.list.currentItem()
        if item is not None:
            self.deleteRequested.emit(int(item.data(Qt.UserRole)))
