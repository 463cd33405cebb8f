"""The connection panel: reach a remote OpenAI-compatible server.

Owns: ``ConnectionPanel`` (preset, base URL, model, where the API key comes from, timeouts,
completion or chat mode, Test connection / Connect, capability badges). Runs on the GUI
thread. It never holds a key: it asks for an environment variable's name or a keyring entry,
and a key typed to be saved goes straight to ``keyringSaveRequested`` and is cleared.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from app.core.remote import SERVER_PRESETS
from backends.sources import RemoteConfig
from widgets.lab_controls import plain_label

__all__ = ["ConnectionPanel", "BADGES"]

#: capability attribute -> badge label
BADGES = {
    "completions_logprobs": "completion logprobs",
    "chat_logprobs": "chat logprobs",
    "stream_logprobs": "streamed logprobs",
    "seed": "seed",
    "top_k": "top_k",
    "min_p": "min_p",
    "json_schema": "JSON schema",
    "echo_logprobs": "prompt logprobs",
}


class ConnectionPanel(QWidget):
    testRequested = Signal(object)  # RemoteConfig
    connectRequested = Signal(object)  # RemoteConfig
    disconnectRequested = Signal()
    keyringSaveRequested = Signal(str, str)  # entry, key (never stored by the panel)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        form = QFormLayout()
        self.preset = QComboBox()
        self.preset.addItems(list(SERVER_PRESETS))
        self.preset.setToolTip("Usual base URLs of common servers; pick Custom for anything else.")
        self.preset.currentTextChanged.connect(self._apply_preset)
        form.addRow("Server", self.preset)
        self.base_url = QLineEdit()
        self.base_url.setPlaceholderText("http://127.0.0.1:8080/v1")
        self.base_url.setToolTip("The server's OpenAI-compatible base URL, ending in /v1.")
        form.addRow("Base URL", self.base_url)
        self.model = QComboBox()
        self.model.setEditable(True)
        self.model.setToolTip("The model name; Test connection fills the list from GET /v1/models.")
        form.addRow("Model", self.model)
        self.key_env = QLineEdit()
        self.key_env.setPlaceholderText("e.g. OPENAI_API_KEY")
        self.key_env.setToolTip("Name of an environment variable that holds the API key (the key itself is never saved).")
        form.addRow("Key from env var", self.key_env)
        krow = QHBoxLayout()
        self.keyring_entry = QLineEdit()
        self.keyring_entry.setPlaceholderText("entry name, e.g. openai")
        self.keyring_entry.setToolTip("Or keep the key in the system keyring under this entry (service 'samplescope').")
        krow.addWidget(self.keyring_entry, 1)
        form.addRow("…or keyring entry", krow)
        srow = QHBoxLayout()
        self.key_input = QLineEdit()
        self.key_input.setEchoMode(QLineEdit.Password)
        self.key_input.setPlaceholderText("paste a key to store it in the keyring")
        self.key_input.setToolTip("Typed keys go to the system keyring only, then this field is cleared.")
        self.save_key = QPushButton("Save to keyring")
        self.save_key.setToolTip(
            "Store the pasted key in the system keyring under the entry named above "
            "(service 'samplescope'), then clear the field; the key is never written to the settings."
        )
        self.save_key.clicked.connect(self._save_key)
        srow.addWidget(self.key_input, 1)
        srow.addWidget(self.save_key)
        form.addRow("", srow)
        trow = QHBoxLayout()
        self.connect_timeout = QDoubleSpinBox()
        self.connect_timeout.setRange(0.5, 120)
        self.connect_timeout.setValue(5.0)
        self.connect_timeout.setSuffix(" s")
        self.connect_timeout.setToolTip("How long to wait for the server to accept the connection.")
        self.read_timeout = QDoubleSpinBox()
        self.read_timeout.setRange(1, 3600)
        self.read_timeout.setValue(60.0)
        self.read_timeout.setSuffix(" s")
        self.read_timeout.setToolTip("How long to wait for the next piece of an answer.")
        trow.addWidget(QLabel("connect"))
        trow.addWidget(self.connect_timeout)
        trow.addWidget(QLabel("read"))
        trow.addWidget(self.read_timeout)
        form.addRow("Timeouts", trow)
        mrow = QHBoxLayout()
        self.completion_mode = QRadioButton("Completion")
        self.completion_mode.setToolTip("/v1/completions: the raw prompt, continued.")
        self.chat_mode = QRadioButton("Chat")
        self.chat_mode.setToolTip("/v1/chat/completions: a list of messages (system, user, assistant).")
        self.completion_mode.setChecked(True)
        mrow.addWidget(self.completion_mode)
        mrow.addWidget(self.chat_mode)
        mrow.addStretch(1)
        form.addRow("Mode", mrow)
        lay.addLayout(form)
        brow = QHBoxLayout()
        self.test_button = QPushButton("Test connection")
        self.test_button.setToolTip("List the models and probe what the server can do")
        self.test_button.clicked.connect(lambda: self._emit(self.testRequested))
        self.connect_button = QPushButton("Connect")
        self.connect_button.setToolTip("Use this server for generation instead of the local model")
        self.connect_button.clicked.connect(lambda: self._emit(self.connectRequested))
        self.disconnect_button = QPushButton("Use local model")
        self.disconnect_button.setToolTip("Go back to the local GGUF model")
        self.disconnect_button.clicked.connect(self.disconnectRequested)
        for b in (self.test_button, self.connect_button, self.disconnect_button):
            brow.addWidget(b)
        lay.addLayout(brow)
        self.status = plain_label("Not connected.", selectable=True)
        lay.addWidget(self.status)
        self.note = plain_label("", selectable=True)
        self.note.setStyleSheet("color: palette(mid);")
        lay.addWidget(self.note)
        self.badge_grid = QGridLayout()
        self.badges: dict[str, QLabel] = {}
        for i, (attr, label) in enumerate(BADGES.items()):
            b = QLabel(label)
            b.setTextFormat(Qt.PlainText)
            b.setAlignment(Qt.AlignCenter)
            b.setStyleSheet(_badge_style(None))
            b.setToolTip("Not probed yet")
            self.badges[attr] = b
            self.badge_grid.addWidget(b, i // 3, i % 3)
        lay.addLayout(self.badge_grid)
        self.top_n_label = plain_label("", selectable=True)
        lay.addWidget(self.top_n_label)
        lay.addStretch(1)
        self._apply_preset(self.preset.currentText())

    # ------------------------------------------------------------------ config
    def config(self) -> RemoteConfig:
        return RemoteConfig(
            base_url=self.base_url.text().strip(),
            model=self.model.currentText().strip(),
            api_key_env=self.key_env.text().strip(),
            keyring_entry=self.keyring_entry.text().strip(),
            connect_timeout=self.connect_timeout.value(),
            read_timeout=self.read_timeout.value(),
            chat=self.chat_mode.isChecked(),
            preset=self.preset.currentText(),
        )

    def set_config(self, c: RemoteConfig) -> None:
        self.preset.blockSignals(True)
        self.preset.setCurrentText(c.preset if c.preset in SERVER_PRESETS else "Custom")
        self.preset.blockSignals(False)
        self.base_url.setText(c.base_url)
        self.model.setCurrentText(c.model)
        self.key_env.setText(c.api_key_env)
        self.keyring_entry.setText(c.keyring_entry)
        self.connect_timeout.setValue(c.connect_timeout)
        self.read_timeout.setValue(c.read_timeout)
        (self.chat_mode if c.chat else self.completion_mode).setChecked(True)
        self.note.setText(SERVER_PRESETS.get(self.preset.currentText(), ("", ""))[1])

    def _apply_preset(self, name: str) -> None:
        url, note = SERVER_PRESETS.get(name, ("", ""))
        if url:
            self.base_url.setText(url)
        self.note.setText(note)

    def _emit(self, signal) -> None:
        c = self.config()
        try:
            c.validate()
        except ValueError as exc:
            self.show_status(str(exc), error=True)
            return
        signal.emit(c)

    def _save_key(self) -> None:
        entry = self.keyring_entry.text().strip()
        key = self.key_input.text()
        self.key_input.clear()
        if not entry:
            self.show_status("Name the keyring entry first.", error=True)
            return
        if not key:
            self.show_status("Paste the key into the field first.", error=True)
            return
        self.keyringSaveRequested.emit(entry, key)

    # ------------------------------------------------------------------ results
    def show_status(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color: #b00020;" if error else "")

    def set_models(self, models: list[str]) -> None:
        current = self.model.currentText()
        self.model.clear()
        self.model.addItems(models)
        if current:
            self.model.setCurrentText(current)
        elif models:
            self.model.setCurrentIndex(0)

    def show_capabilities(self, caps) -> None:
        """``caps``: the server's probed capabilities (attributes named as in ``BADGES``)."""
        for attr, badge in self.badges.items():
            value = getattr(caps, attr, None)
            badge.setStyleSheet(_badge_style(value))
            badge.setToolTip(
                {True: "The server honours this", False: "The server ignores or refuses this",
                 None: "Not probed"}[value if value in (True, False) else None]
            )
        n = getattr(caps, "top_n_max", 0)
        self.top_n_label.setText(f"Largest top-N of alternatives the server returns: {n}" if n
                                 else "The server returns no alternatives (log-probabilities off).")

    def badge_state(self) -> dict[str, str]:
        return {attr: b.toolTip() for attr, b in self.badges.items()}

    def set_busy(self, busy: bool) -> None:
        for w in (self.test_button, self.connect_button):
            w.setEnabled(not busy)


def _badge_style(value) -> str:
    if value is True:
        return "background: #d8f3dc; color: #1b4332; border-radius: 3px; padding: 2px 4px;"
    if value is False:
        return "background: #eeeeee; color: #777777; border-radius: 3px; padding: 2px 4px; text-decoration: line-through;"
    return "background: #f4f4f4; color: #999999; border-radius: 3px; padding: 2px 4px;"
