"""The model picker: the GGUF models already on disk, in a table to choose one from.

Owns: ``ModelPickerDialog``. It lists what ``backends.discovery.iter_models`` finds (the Hugging
Face cache, LM Studio, Ollama, llama.cpp's cache and the folders the user added) with what each
header says (architecture, size label, quantization, file size, context length) or, for a file
that cannot be used, the reason in one line; "Add folder…" / "Remove folder" change the searched
folders (``foldersChanged``: the caller saves them), and choosing a usable model emits
``modelChosen(path)``. The search runs on a worker thread of its own (``app.workers.
GeneratorWorker``, "model-discovery"), one entry at a time into the table, so the window never
waits on a slow disk; it stops when the dialog closes. Every text from disk (names, paths,
reasons) is shown as plain text: table items, plain-text labels, ``plain_tip`` tooltips.
GUI thread.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, Iterator

from PySide6.QtCore import QCoreApplication, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.workers import GeneratorWorker, Job
from backends.discovery import FoundModel, iter_models, locations
from widgets.formatting import plain_tip
from widgets.lab_controls import plain_label

__all__ = ["ModelPickerDialog", "COLUMNS"]

#: the table's columns
COLUMNS = ("Name", "Source", "Architecture", "Size", "Quantization", "File size", "Context")
_SOURCE_NAMES = {"huggingface": "Hugging Face", "lmstudio": "LM Studio", "ollama": "Ollama",
                 "llama.cpp": "llama.cpp cache", "folder": "added folder"}
_COLUMN_TIPS = (
    "The model's name where it was found: ORG/REPO/FILE (Hugging Face, LM Studio), NAME:TAG (Ollama), "
    "the path inside an added folder",
    "Where it was found",
    "general.architecture in the GGUF header: the model family llama.cpp runs it as",
    "general.size_label in the header (or from the file name): the number of parameters",
    "The weights' quantization: general.file_type by llama.cpp's name (or from the file name)",
    "Bytes on disk (all parts of a split model)",
    "The training context in tokens ({architecture}.context_length in the header)",
)

Scan = Callable[[list[str], threading.Event], Iterator[FoundModel]]


def _item(text: str) -> QTableWidgetItem:
    """A read-only cell (a table item's text is always plain text)."""
    item = QTableWidgetItem(text)
    item.setFlags(Qt.ItemIsSelectable | Qt.ItemIsEnabled)
    return item


class ModelPickerDialog(QDialog):
    """See the module docstring. ``folders``: the added folders to search beside the usual
    places; ``scan(folders, cancel)`` is what searches (``backends.discovery.iter_models``)."""

    #: the path of the model to load
    modelChosen = Signal(str)
    #: the added folders, after one was added or removed
    foldersChanged = Signal(list)

    def __init__(self, folders: list[str] | None = None, parent: QWidget | None = None, *,
                 scan: Scan | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models on disk")
        self.resize(980, 520)
        self._folders = list(dict.fromkeys(folders or []))
        self._scan = scan or (lambda fs, cancel: iter_models(fs, cancel=cancel))
        self._models: list[FoundModel] = []
        self._job: Job | None = None
        self._worker: GeneratorWorker | None = None

        lay = QVBoxLayout(self)
        self.status = plain_label("", selectable=True)
        self.status.setToolTip("What the search found, and where it looked")
        lay.addWidget(self.status)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        for i, tip in enumerate(_COLUMN_TIPS):
            self.table.horizontalHeaderItem(i).setToolTip(tip)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        for i in range(1, len(COLUMNS)):
            header.setSectionResizeMode(i, QHeaderView.ResizeToContents)
        self.table.setToolTip("The GGUF models found on disk. Double-click one (or select it and press Load) to "
                              "load it; a row that says why a file cannot be used cannot be loaded.")
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.cellDoubleClicked.connect(lambda row, _col: self._choose(row))
        lay.addWidget(self.table, 1)
        self.details = plain_label("", selectable=True)
        self.details.setToolTip("The selected model's file (and why it cannot be used, when it cannot)")
        lay.addWidget(self.details)

        folders_row = QHBoxLayout()
        folders_label = plain_label("Added folders", selectable=True)
        folders_label.setWordWrap(False)
        folders_label.setToolTip("Folders you added: searched with their subfolders, remembered between sessions")
        folders_row.addWidget(folders_label)
        self.folder_list = QListWidget()
        self.folder_list.setMaximumHeight(72)
        self.folder_list.setToolTip("Folders searched (with their subfolders) beside the usual places; they are "
                                    "remembered between sessions")
        self.folder_list.itemSelectionChanged.connect(self._on_folder_selection)
        folders_row.addWidget(self.folder_list, 1)
        side = QVBoxLayout()
        self.add_button = QPushButton("Add folder…")
        self.add_button.setToolTip("Choose a folder to search for .gguf files too (remembered)")
        self.add_button.clicked.connect(self._ask_folder)
        side.addWidget(self.add_button)
        self.remove_button = QPushButton("Remove folder")
        self.remove_button.setToolTip("Stop searching the selected added folder (its files stay where they are)")
        self.remove_button.setEnabled(False)
        self.remove_button.clicked.connect(self._remove_selected_folder)
        side.addWidget(self.remove_button)
        folders_row.addLayout(side)
        lay.addLayout(folders_row)

        buttons = QHBoxLayout()
        self.rescan_button = QPushButton("Search again")
        self.rescan_button.setToolTip("Look through every location again (after a download, say)")
        self.rescan_button.clicked.connect(self.rescan)
        buttons.addWidget(self.rescan_button)
        buttons.addStretch(1)
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Load the selected model with the model panel's context, GPU layers and threads")
        self.load_button.setEnabled(False)
        self.load_button.setDefault(True)
        self.load_button.clicked.connect(lambda: self._choose(self.table.currentRow()))
        buttons.addWidget(self.load_button)
        self.cancel_button = QPushButton("Close")
        self.cancel_button.setToolTip("Close the picker without loading anything")
        self.cancel_button.clicked.connect(self.reject)
        buttons.addWidget(self.cancel_button)
        lay.addLayout(buttons)

        self._show_folders()
        app = QCoreApplication.instance()
        if app is not None:  # a picker still open when the application quits stops its thread first
            app.aboutToQuit.connect(self.shutdown)
        self.rescan()

    # ------------------------------------------------------------------ the search
    @property
    def folders(self) -> list[str]:
        return list(self._folders)

    @property
    def models(self) -> list[FoundModel]:
        """What the search has found so far, in the order found."""
        return list(self._models)

    @property
    def searching(self) -> bool:
        return self._job is not None

    def rescan(self) -> None:
        """Search every location again, replacing the table."""
        self._stop()
        self._models = []
        self.table.setRowCount(0)
        self.load_button.setEnabled(False)
        self.details.setText("")
        self.status.setText("Searching the Hugging Face cache, LM Studio, Ollama, llama.cpp's cache and the added "
                            "folders…")
        if self._worker is None:
            self._worker = GeneratorWorker("model-discovery", self)
            self._worker.yielded.connect(self._on_found)
            self._worker.done.connect(self._on_done)
            self._worker.failed.connect(self._on_failed)
        folders = list(self._folders)
        self._job = self._worker.submit(Job(lambda cancel: self._scan(folders, cancel), kind="discovery"))

    def _stop(self) -> None:
        if self._job is not None:
            self._job.cancel.set()
            self._job = None

    def _on_found(self, job_id: int, model: FoundModel) -> None:
        if self._job is None or job_id != self._job.id:
            return  # a search that was replaced
        self._models.append(model)
        self._add_row(model)

    def _on_done(self, job_id: int, _result) -> None:
        if self._job is None or job_id != self._job.id:
            return
        self._job = None
        bad = sum(m.error is not None for m in self._models)
        text = f"{len(self._models)} model(s) found" + (f", {bad} of them cannot be used" if bad else "") + "."
        if not self._models:
            text += " Add a folder that holds .gguf files, or download a model with LM Studio, Ollama or llama.cpp."
        self.status.setText(text)
        where = "\n".join(f"{loc.source}: {loc.path}" + ("" if loc.path.is_dir() else " (not there)")
                          for loc in locations(self._folders))
        self.status.setToolTip(plain_tip("Searched:\n" + where))

    def _on_failed(self, job_id: int, exc: object, _tb: str) -> None:
        if self._job is None or job_id != self._job.id:
            return
        self._job = None
        self.status.setText(f"The search stopped: {type(exc).__name__}: {exc}")

    def _add_row(self, m: FoundModel) -> None:
        row = self.table.rowCount()
        self.table.insertRow(row)
        name = _item(m.name)
        name.setData(Qt.UserRole, len(self._models) - 1)
        tip = m.path if m.error is None else f"{m.path}\n\nCannot be used: {m.error}"
        name.setToolTip(plain_tip(tip))
        self.table.setItem(row, 0, name)
        source = _item(_SOURCE_NAMES.get(m.source, m.source))
        source.setToolTip(plain_tip(m.path))
        self.table.setItem(row, 1, source)
        if m.error is not None:
            reason = _item(f"Cannot be used: {m.error}")
            reason.setToolTip(plain_tip(m.error))
            reason.setForeground(self.palette().placeholderText())
            reason.setData(Qt.SizeHintRole, QSize(1, 1))  # the span's width, not its text, sizes column 2
            self.table.setItem(row, 2, reason)
            for col in range(3, len(COLUMNS)):
                self.table.setItem(row, col, _item(""))
            self.table.setSpan(row, 2, 1, len(COLUMNS) - 2)
            return
        cells = (
            _item(m.architecture or "–"), _item(m.size_label or "–"), _item(m.quantization or "–"),
            _item(m.file_size_text), _item("–" if m.context_length is None else f"{m.context_length:,}"),
        )
        for col, item in enumerate(cells, start=2):
            self.table.setItem(row, col, item)

    # ------------------------------------------------------------------ choosing
    def model_at(self, row: int) -> FoundModel | None:
        item = self.table.item(row, 0) if row >= 0 else None
        if item is None:
            return None
        index = item.data(Qt.UserRole)
        return self._models[index] if isinstance(index, int) and 0 <= index < len(self._models) else None

    def row_of(self, path: str) -> int:
        """The table row of the model at ``path`` (-1 if none)."""
        for row in range(self.table.rowCount()):
            m = self.model_at(row)
            if m is not None and m.path == path:
                return row
        return -1

    def _on_selection(self) -> None:
        m = self.model_at(self.table.currentRow())
        usable = m is not None and m.error is None
        self.load_button.setEnabled(usable)
        self.details.setText("" if m is None else m.path + ("" if m.error is None else f"\n{m.error}"))
        if m is not None and m.error is not None:
            self.load_button.setToolTip(plain_tip(f"This file cannot be used: {m.error}"))
        else:
            self.load_button.setToolTip("Load the selected model with the model panel's context, GPU layers and "
                                        "threads")

    def _choose(self, row: int) -> None:
        m = self.model_at(row)
        if m is None or m.error is not None:
            return
        self.modelChosen.emit(m.path)
        self.accept()

    # ------------------------------------------------------------------ folders
    def _show_folders(self) -> None:
        self.folder_list.clear()
        for f in self._folders:
            item = QListWidgetItem(f)
            item.setToolTip(plain_tip(f))
            self.folder_list.addItem(item)
        self.remove_button.setEnabled(False)

    def _on_folder_selection(self) -> None:
        self.remove_button.setEnabled(bool(self.folder_list.selectedItems()))

    def _ask_folder(self) -> None:
        start = self._folders[-1] if self._folders else str(Path.home())
        path = QFileDialog.getExistingDirectory(self, "Add a folder of GGUF models", start)
        if path:
            self.add_folder(path)

    def add_folder(self, path: str) -> bool:
        """Search ``path`` too (and say so with ``foldersChanged``); False if it was there already."""
        path = os.path.normpath(os.path.expanduser(path))
        if path in self._folders:
            return False
        self._folders.append(path)
        self._show_folders()
        self.foldersChanged.emit(list(self._folders))
        self.rescan()
        return True

    def remove_folder(self, path: str) -> None:
        if path not in self._folders:
            return
        self._folders.remove(path)
        self._show_folders()
        self.foldersChanged.emit(list(self._folders))
        self.rescan()

    def _remove_selected_folder(self) -> None:
        for item in self.folder_list.selectedItems():
            self.remove_folder(item.text())

    # ------------------------------------------------------------------ closing
    def done(self, result: int) -> None:  # accept, reject, Esc, the close button
        self.shutdown()
        super().done(result)

    def shutdown(self) -> None:
        """Stop the search and its thread (waits for the file being read)."""
        self._stop()
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None  # a later search starts a new thread
