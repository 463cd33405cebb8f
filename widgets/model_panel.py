"""The model panel: which model, how to load it, and its model card.

Owns: ``ModelPanel``. Runs on the GUI thread. It only asks for loads (``loadRequested``)
and shows what the controller reports (progress, model card, GPU offload support). Its "Models
on disk…" button opens the model picker (``widgets.model_picker``) on the folders the window gave
it (``set_model_folders``); a model chosen there is selected and loaded as the Load button does.
"""

from __future__ import annotations

import os

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from typing import Callable

from backends.base import LoadSettings, ModelInfo
from widgets.formatting import plain_tip
from widgets.model_picker import ModelPickerDialog

__all__ = ["ModelPanel", "EMBEDDED_LABEL", "show_progress"]

EMBEDDED_LABEL = "Embedded: Gemma 3 270M (Q4_K_M)"


def show_progress(bar: QProgressBar, done: int, total: int, what: str) -> None:
    """Show ``done`` of ``total`` on ``bar`` as a percentage; total 0 means "busy, size unknown"."""
    bar.setVisible(True)
    if total > 0:
        bar.setRange(0, 1000)
        bar.setValue(int(1000 * done / total))
        bar.setFormat(f"{what} {100 * done / total:.0f}%")
    else:
        bar.setRange(0, 0)  # busy indicator
        bar.setFormat(what)


def _plain(text: str = "") -> QLabel:
    lab = QLabel(text)
    lab.setTextFormat(Qt.PlainText)
    lab.setTextInteractionFlags(Qt.TextSelectableByMouse)
    lab.setWordWrap(True)
    return lab


class ModelPanel(QWidget):
    #: (path or None for the embedded model, n_ctx, n_gpu_layers, n_threads)
    loadRequested = Signal(object, int, int, int)
    openRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("The embedded model and recently used GGUF files")
        self.model_combo.addItem(EMBEDDED_LABEL, None)
        row.addWidget(self.model_combo, 1)
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("Open another GGUF file (Ctrl+O); you can also drop one on the window")
        self.open_button.clicked.connect(self.openRequested)
        row.addWidget(self.open_button)
        lay.addLayout(row)
        self.picker_button = QPushButton("Models on disk…")
        self.picker_button.setToolTip(
            "List the GGUF models already on this computer (Hugging Face cache, LM Studio, Ollama, llama.cpp's "
            "cache, folders you add) with their architecture, size, quantization and context, and load one")
        self.picker_button.clicked.connect(self.open_model_picker)
        lay.addWidget(self.picker_button)
        self._model_folders: list[str] = []
        self._save_model_folders: Callable[[list[str]], None] | None = None
        #: the open model picker (None when closed)
        self.picker: ModelPickerDialog | None = None

        form = QFormLayout()
        limits = LoadSettings.LIMITS  # the ranges the command line and the engine check too
        self.n_ctx = QSpinBox()
        self.n_ctx.setRange(*limits["n_ctx"])
        self.n_ctx.setSpecialValueText("training context (0)")
        self.n_ctx.setSingleStep(256)
        self.n_ctx.setValue(2048)
        self.n_ctx.setToolTip("Context window in tokens: prompt plus generated text must fit in it. "
                              "0 uses the model's training context (can be very large).")
        form.addRow("Context (n_ctx)", self.n_ctx)
        self.n_gpu = QSpinBox()
        self.n_gpu.setRange(*limits["n_gpu_layers"])
        self.n_gpu.setSpecialValueText("all (-1)")
        self.n_gpu.setValue(0)
        form.addRow("GPU layers", self.n_gpu)
        self.n_threads = QSpinBox()
        self.n_threads.setRange(*limits["n_threads"])
        self.n_threads.setSpecialValueText("automatic (0)")
        self.n_threads.setValue(min(4, os.cpu_count() or 1))
        self.n_threads.setToolTip("CPU threads llama.cpp uses for evaluation (0 = automatic: min(4, CPUs)).")
        form.addRow("Threads", self.n_threads)
        self.parallel = QSpinBox()
        self.parallel.setRange(0, 64)
        self.parallel.setSpecialValueText("automatic (0)")
        self.parallel.setValue(0)
        self.parallel.setToolTip(
            "The most generations the labs run at once (VS comparisons, sampled answers, align runs, "
            "N children): parallel sequences of one batch on a local model, concurrent requests to a server. "
            "0 = automatic (up to 8 locally, 4 to a server); 1 = one at a time, the exact single-sequence path. "
            "Each generation keeps its own seed either way; batching moves probabilities only by llama.cpp's "
            "float noise.")
        form.addRow("Parallel sequences", self.parallel)
        self.whatif_memory = QSpinBox()
        self.whatif_memory.setRange(0, 65536)
        self.whatif_memory.setSuffix(" MB")
        self.whatif_memory.setSpecialValueText("off (0)")
        self.whatif_memory.setSingleStep(64)
        self.whatif_memory.setValue(256)
        self.whatif_memory.setToolTip(
            "Memory for the live what-if: the full logits of every step of recent runs are kept (1 MB a "
            "step for a 262,144-token vocabulary), so moving a sampler knob re-computes the selected step "
            "at once. The oldest runs are dropped first. 0 = keep none (no what-if).")
        form.addRow("What-if memory", self.whatif_memory)
        lay.addLayout(form)
        self.gpu_label = _plain()
        lay.addWidget(self.gpu_label)
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("Load the selected model with these settings")
        self.load_button.clicked.connect(self._request_load)
        lay.addWidget(self.load_button)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.progress.setTextVisible(True)
        lay.addWidget(self.progress)
        self.status = _plain("No model loaded.")
        lay.addWidget(self.status)
        card_title = QLabel("Model card")
        card_title.setStyleSheet("font-weight: bold;")
        lay.addWidget(card_title)
        self.card = QFormLayout()
        lay.addLayout(self.card)
        self._card_labels: dict[str, QLabel] = {}
        for key in ("Name", "Architecture", "Size", "Quantization", "Vocabulary", "Training context",
                    "Layers", "File size", "Chat template"):
            lab = _plain("–")
            self._card_labels[key] = lab
            self.card.addRow(key, lab)
        self.set_gpu_support(False)

    # ------------------------------------------------------------------ inputs
    def set_gpu_support(self, supported: bool, n_layers: int | None = None) -> None:
        self.n_gpu.setEnabled(supported)
        if supported:
            layers = f" The model has {n_layers} layers; -1 offloads all." if n_layers else ""
            self.gpu_label.setText("GPU offload: available in this llama-cpp-python build." + layers)
            self.n_gpu.setToolTip("Layers to offload to the GPU (-1 = all)." + layers)
        else:
            layers = f" (the model has {n_layers} layers)" if n_layers else ""
            self.gpu_label.setText("GPU offload: not available in this build; running on the CPU" + layers + ".")
            self.n_gpu.setToolTip(
                "This llama-cpp-python build has no GPU backend. Reinstall it with, for example, "
                'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python'
            )

    def set_recent(self, paths: list[str], current: str | None) -> None:
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItem(EMBEDDED_LABEL, None)
        for p in paths:
            self.model_combo.addItem(os.path.basename(p), p)
            self.model_combo.setItemData(self.model_combo.count() - 1, plain_tip(p), Qt.ToolTipRole)
        idx = self.model_combo.findData(current) if current else 0
        self.model_combo.setCurrentIndex(max(0, idx))
        self.model_combo.blockSignals(False)

    def set_model_folders(self, folders: list[str], save: Callable[[list[str]], None] | None = None) -> None:
        """The folders the model picker searches beside the usual places, and what to call with
        the new list when the user adds or removes one there (the window saves it)."""
        self._model_folders = list(folders)
        self._save_model_folders = save

    def open_model_picker(self) -> ModelPickerDialog:
        """Open the model picker (window-modal); a model chosen there is selected and loaded."""
        dlg = ModelPickerDialog(self._model_folders, self)
        dlg.setAttribute(Qt.WA_DeleteOnClose)
        dlg.modelChosen.connect(self._load_chosen)
        dlg.foldersChanged.connect(self._on_picker_folders)
        dlg.finished.connect(self._on_picker_closed)
        self.picker = dlg
        dlg.open()
        return dlg

    def _on_picker_closed(self, _result: int) -> None:
        self.picker = None

    def _on_picker_folders(self, folders: list[str]) -> None:
        self._model_folders = list(folders)
        if self._save_model_folders is not None:
            self._save_model_folders(list(folders))

    def _load_chosen(self, path: str) -> None:
        self.select_path(path)
        self._request_load()

    def selected_path(self) -> str | None:
        return self.model_combo.currentData()

    def select_path(self, path: str | None) -> None:
        idx = self.model_combo.findData(path) if path else 0
        if idx < 0:
            self.model_combo.addItem(os.path.basename(path), path)
            idx = self.model_combo.count() - 1
        self.model_combo.setCurrentIndex(idx)

    def _request_load(self) -> None:
        self.loadRequested.emit(
            self.selected_path(), self.n_ctx.value(), self.n_gpu.value(), self.n_threads.value()
        )

    # ------------------------------------------------------------------ outputs
    def set_busy(self, busy: bool) -> None:
        self.load_button.setEnabled(not busy)
        self.open_button.setEnabled(not busy)
        self.picker_button.setEnabled(not busy)
        self.model_combo.setEnabled(not busy)
        if busy:
            self.progress.setVisible(True)
        else:
            self.progress.setVisible(False)

    def show_progress(self, done: int, total: int, what: str) -> None:
        show_progress(self.progress, done, total, what)
        self.status.setText(what)

    def show_model(self, info: ModelInfo) -> None:
        for key, value in info.card_lines():
            if key in self._card_labels:
                self._card_labels[key].setText(value)
        self.set_gpu_support(info.gpu_offload_supported, info.n_layers)
        gpu = f", {info.n_gpu_layers} layers on GPU" if info.gpu_offload_supported else ""
        self.status.setText(
            f"Loaded {os.path.basename(info.path)}: context {info.n_ctx:,}, {info.n_threads} threads{gpu}."
        )

    def show_error(self, message: str) -> None:
        self.status.setText(message)

    def card_text(self) -> dict[str, str]:
        return {k: v.text() for k, v in self._card_labels.items()}
