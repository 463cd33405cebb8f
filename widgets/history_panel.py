"""The history lists: past runs and past lab runs from the run store, newest first.

Owns: ``HistoryPanel`` (two tabs: "Runs" of the workbench, "Lab runs" of the labs). Runs on
the GUI thread. Emits ``openRequested(run_id)`` / ``openLabRequested(experiment_id)`` on a
double-click or Enter, and the matching delete signals; it never touches the store itself.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QHBoxLayout, QListWidget, QListWidgetItem, QPushButton, QTabWidget, QVBoxLayout,
                               QWidget)

from widgets.formatting import plain_tip

__all__ = ["HistoryPanel"]


class HistoryPanel(QWidget):
    openRequested = Signal(int)
    deleteRequested = Signal(int)
    openLabRequested = Signal(int)
    deleteLabRequested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.tabs = QTabWidget()
        self.list = QListWidget()
        self.list.setToolTip("Past runs. Double-click (or Enter) to reopen one with its plots.")
        self.list.itemActivated.connect(self._activate)
        self.lab_list = QListWidget()
        self.lab_list.setToolTip("Past lab runs, finished or stopped. Double-click (or Enter) to show one in its lab.")
        self.lab_list.itemActivated.connect(self._activate)
        self.tabs.addTab(self.list, "Runs")
        self.tabs.addTab(self.lab_list, "Lab runs")
        lay.addWidget(self.tabs)
        row = QHBoxLayout()
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip(
            "Reopen the selected run with its plots, or show the selected lab run in its lab (same as a double-click)."
        )
        self.open_button.clicked.connect(lambda: self._activate(self._current_list().currentItem()))
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the selected run (or lab run) from the history on disk; there is no undo.")
        self.delete_button.clicked.connect(self._delete)
        row.addWidget(self.open_button)
        row.addWidget(self.delete_button)
        lay.addLayout(row)

    def set_runs(self, runs) -> None:
        """``runs``: RunSummary values from ``RunStore.list_runs``."""
        self.list.clear()
        for r in runs:
            when = r.created_at.replace("T", " ")[:19]
            label = f"#{r.id}  {when}  {r.n_tokens} tok  {r.finish_reason or 'running'}\n{r.prompt_preview}"
            item = QListWidgetItem(label)  # QListWidgetItem text is plain text
            item.setData(Qt.UserRole, r.id)
            speed = f", {r.tokens_per_s:.1f} tokens/s" if r.tokens_per_s is not None else ""
            item.setToolTip(plain_tip(f"{r.model_name}{speed}"))
            self.list.addItem(item)

    def set_lab_runs(self, runs) -> None:
        """``runs``: ExperimentSummary values from ``RunStore.list_experiments``."""
        self.lab_list.clear()
        for r in runs:
            when = r.created_at.replace("T", " ")[:19]
            item = QListWidgetItem(f"#{r.id}  {when}  {r.kind}  {r.status}  {r.n_records} records\n{r.title}")
            item.setData(Qt.UserRole, r.id)
            item.setToolTip(plain_tip(r.model_name))
            self.lab_list.addItem(item)

    def run_ids(self) -> list[int]:
        return [self.list.item(i).data(Qt.UserRole) for i in range(self.list.count())]

    def lab_run_ids(self) -> list[int]:
        return [self.lab_list.item(i).data(Qt.UserRole) for i in range(self.lab_list.count())]

    def _current_list(self) -> QListWidget:
        return self.lab_list if self.tabs.currentWidget() is self.lab_list else self.list

    def _activate(self, item: QListWidgetItem | None) -> None:
        if item is None:
            return
        if item.listWidget() is self.lab_list:
            self.openLabRequested.emit(int(item.data(Qt.UserRole)))
        else:
            self.openRequested.emit(int(item.data(Qt.UserRole)))

    def _delete(self) -> None:
        lst = self._current_list()
        item = lst.currentItem()
        if item is None:
            return
        if lst is self.lab_list:
            self.deleteLabRequested.emit(int(item.data(Qt.UserRole)))
        else:
            self.deleteRequested.emit(int(item.data(Qt.UserRole)))
