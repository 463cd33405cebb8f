"""The sampling panel: presets, every knob of the sampler chain with a tooltip, and the
"values actually used" line.

Owns: ``SamplingPanel`` and ``PRESETS``. Runs on the GUI thread. Produces a frozen
``SamplerSettings`` (``settings()``); a value out of range is refused at the widget with the
reason shown under the knobs.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from backends.base import SamplerSettings

__all__ = ["SamplingPanel", "PRESETS", "describe_chain"]

_OFF = dict(top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0)
PRESETS: dict[str, dict] = {
    "Greedy": dict(_OFF, temperature=0.0),
    "Balanced": dict(_OFF, temperature=0.8, top_k=40, top_p=0.95, min_p=0.05),
    "Creative": dict(_OFF, temperature=1.2, top_p=0.98, min_p=0.02, repeat_penalty=1.1),
    "Neutral": dict(_OFF, temperature=1.0),
}

#: (attribute, label, decimals or None for int, step, tooltip)
_KNOBS = [
    ("temperature", "Temperature", 2, 0.05,
     "Divides the logits before the draw. Below 1 sharpens the distribution (more predictable), "
     "above 1 flattens it (more surprising). 0 means greedy: always the most likely token. "
     "Applied last, after the truncation stages, as llama.cpp does."),
    ("top_k", "Top-k", None, 1,
     "Keep only the k most likely tokens. 0 switches it off (all 262,144 tokens stay candidates)."),
    ("top_p", "Top-p", 3, 0.01,
     "Nucleus sampling: keep the smallest set of most likely tokens whose probabilities add up to "
     "at least p. 1.0 switches it off."),
    ("min_p", "Min-p", 3, 0.01,
     "Keep tokens whose probability is at least min-p times that of the most likely token. "
     "Scales with the model's confidence. 0 switches it off."),
    ("typical_p", "Typical-p", 3, 0.01,
     "Locally typical sampling: keep the tokens whose surprisal is closest to the step's entropy "
     "until their mass reaches p. 1.0 switches it off."),
    ("repeat_penalty", "Repeat penalty", 2, 0.05,
     "Makes tokens seen in the last N tokens less likely: a positive logit is divided by it, a "
     "negative one multiplied. 1.0 switches it off."),
    ("frequency_penalty", "Frequency penalty", 2, 0.05,
     "Subtracts this times the token's count in the last N tokens from its logit. 0 = off."),
    ("presence_penalty", "Presence penalty", 2, 0.05,
     "Subtracts this from the logit of every token that appeared in the last N tokens. 0 = off."),
    ("penalty_last_n", "Penalty window (last N)", None, 16,
     "How many of the most recent tokens (prompt included) the penalties look at. 0 = none."),
    ("min_keep", "Min keep", None, 1,
     "Every truncation stage keeps at least this many tokens, as in llama.cpp."),
    ("seed", "Seed", None, 1,
     "Seed of the random draw. The same seed, prompt, model and settings give the same tokens."),
    ("max_tokens", "Max new tokens", None, 16, "Stop after this many generated tokens."),
    ("top_n", "Top-N recorded", None, 1,
     "How many of the most likely tokens are recorded at every step for the plots, tooltips "
     "and exports."),
]


class _RefusingMixin:
    """Spin boxes that say why a typed value was refused instead of swallowing the key."""

    def _refusal(self, text: str) -> str | None:
        body = text.strip().removeprefix(self.prefix()).removesuffix(self.suffix()).strip()
        try:
            value = float(body.replace(",", "."))
        except ValueError:
            return None if body in ("", "-", "+", ".") else f"{self.objectName()}: '{body}' is not a number."
        if not self.minimum() <= value <= self.maximum():
            return (
                f"{self.objectName()} = {body} refused: it must be between "
                f"{self.minimum():g} and {self.maximum():g}."
            )
        return None

    def validate(self, text, pos):
        state = super().validate(text, pos)
        if _state_invalid(state):
            reason = self._refusal(text)
            if reason:
                self.refused.emit(reason)
        return state


class _IntSpin(_RefusingMixin, QSpinBox):
    refused = Signal(str)


class _FloatSpin(_RefusingMixin, QDoubleSpinBox):
    refused = Signal(str)


def _state_invalid(state) -> bool:
    from PySide6.QtGui import QValidator

    s = state[0] if isinstance(state, tuple) else state
    return s == QValidator.State.Invalid


def describe_chain(s: SamplerSettings) -> str:
    """The chain exactly as it will run, stage by stage."""
    parts = []
    if s.repeat_penalty != 1.0 or s.frequency_penalty or s.presence_penalty:
        parts.append(
            f"penalties(repeat {s.repeat_penalty:g}, freq {s.frequency_penalty:g}, "
            f"presence {s.presence_penalty:g}, last {s.penalty_last_n})"
        )
    parts.append(f"top-k {s.top_k}" if s.top_k > 0 else "top-k off")
    parts.append(f"typical {s.typical_p:g}" if s.typical_p < 1 else "typical off")
    parts.append(f"top-p {s.top_p:g}" if s.top_p < 1 else "top-p off")
    parts.append(f"min-p {s.min_p:g}" if s.min_p > 0 else "min-p off")
    if s.greedy:
        parts.append("temperature 0 → greedy (argmax)")
    else:
        parts.append(f"temperature {s.temperature:g}")
        parts.append(f"draw (seed {s.seed})")
    tail = f"; min_keep {s.min_keep}; max {s.max_tokens} tokens"
    if s.stop:
        tail += "; stop at " + ", ".join(repr(x) for x in s.stop)
    return " → ".join(parts) + tail


def _parse_stops(text: str) -> tuple[str, ...]:
    out = []
    for part in text.split("|"):
        part = part.replace("\\n", "\n").replace("\\t", "\t")
        if part:
            out.append(part)
    return tuple(out)


def _format_stops(stops: tuple[str, ...]) -> str:
    return "|".join(s.replace("\n", "\\n").replace("\t", "\\t") for s in stops)


class SamplingPanel(QWidget):
    settingsChanged = Signal(object)  # SamplerSettings

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._spins: dict[str, QAbstractSpinBox] = {}
        self._updating = False
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(QLabel("Preset"))
        self.preset = QComboBox()
        self.preset.addItems(list(PRESETS) + ["Custom"])
        self.preset.setToolTip(
            "Greedy: always the top token. Balanced: llama.cpp's defaults. Creative: hotter, wider "
            "nucleus, mild repetition penalty. Neutral: the model's own distribution, nothing removed."
        )
        self.preset.currentTextChanged.connect(self._apply_preset)
        top.addWidget(self.preset, 1)
        lay.addLayout(top)
        self.error_label = QLabel("")
        self.error_label.setTextFormat(Qt.PlainText)
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #b00020;")
        form = QFormLayout()
        defaults = SamplerSettings()
        for name, label, decimals, step, tip in _KNOBS:
            lo, hi = SamplerSettings.LIMITS[name]
            if decimals is None:
                w = _IntSpin()
                w.setRange(int(lo), int(min(hi, 2**31 - 1)))
            else:
                w = _FloatSpin()
                w.setDecimals(decimals)
                w.setRange(lo, hi)
            w.setSingleStep(step)
            w.setKeyboardTracking(False)
            w.setValue(getattr(defaults, name))
            w.setToolTip(f"{tip}\nAllowed: {lo:g} to {hi:g}.")
            w.valueChanged.connect(self._on_changed)
            w.refused.connect(self.error_label_show)
            w.setObjectName(name)
            self._spins[name] = w
            lab = QLabel(label)
            lab.setToolTip(w.toolTip())
            if name == "seed":
                row = QHBoxLayout()
                row.addWidget(w, 1)
                dice = QPushButton("New")
                dice.setToolTip("Pick a new random seed")
                dice.clicked.connect(self._new_seed)
                row.addWidget(dice)
                form.addRow(lab, row)
            else:
                form.addRow(lab, w)
        self.stop_edit = QLineEdit()
        self.stop_edit.setPlaceholderText(r"e.g. \n\n|END")
        self.stop_edit.setToolTip(
            "Stop strings, separated by |. Write a newline as \\n. Generation ends when the output "
            "contains one; the text is cut before it."
        )
        self.stop_edit.editingFinished.connect(self._on_changed)
        form.addRow("Stop strings", self.stop_edit)
        lay.addLayout(form)
        lay.addWidget(self.error_label)
        used_title = QLabel("Values actually used")
        used_title.setStyleSheet("font-weight: bold;")
        lay.addWidget(used_title)
        self.used_label = QLabel()
        self.used_label.setTextFormat(Qt.PlainText)
        self.used_label.setWordWrap(True)
        self.used_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.used_label.setToolTip("The sampler chain in the order it runs (llama.cpp's default order).")
        lay.addWidget(self.used_label)
        lay.addStretch(1)
        self.preset.setCurrentText("Balanced")
        self._apply_preset("Balanced")

    # ------------------------------------------------------------------ values
    def settings(self) -> SamplerSettings:
        kwargs = {name: w.value() for name, w in self._spins.items()}
        kwargs["stop"] = _parse_stops(self.stop_edit.text())
        return SamplerSettings(**kwargs)

    def set_settings(self, s: SamplerSettings, preset: str | None = None) -> None:
        self._updating = True
        try:
            for name, w in self._spins.items():
                w.setValue(getattr(s, name))
            self.stop_edit.setText(_format_stops(s.stop))
            if preset is not None:
                self.preset.setCurrentText(preset)
        finally:
            self._updating = False
        self._on_changed()

    def _apply_preset(self, name: str) -> None:
        if name not in PRESETS:
            return
        self._updating = True
        try:
            for key, value in PRESETS[name].items():
                self._spins[key].setValue(value)
        finally:
            self._updating = False
        self._on_changed(from_preset=True)

    def _new_seed(self) -> None:
        import random

        self._spins["seed"].setValue(random.randrange(0, 2**31 - 1))

    def set_unsupported(self, reasons: dict[str, str]) -> None:
        """Disable the knobs a backend would ignore, each with a tooltip that says why; an
        empty dict enables everything again."""
        for name, w in self._spins.items():
            base = w.toolTip().split("\n\nDisabled: ")[0]
            if name in reasons:
                w.setEnabled(False)
                w.setToolTip(f"{base}\n\nDisabled: {reasons[name]}")
            else:
                w.setEnabled(True)
                w.setToolTip(base)
        self._unsupported = dict(reasons)
        self._on_changed()

    def unsupported(self) -> dict[str, str]:
        return dict(getattr(self, "_unsupported", {}))

    def error_label_show(self, reason: str) -> None:
        self.error_label.setText(reason)

    def _on_changed(self, *args, from_preset: bool = False) -> None:
        if self._updating:
            return
        self.error_label.setText("")
        s = self.settings()
        if not from_preset:
            match = next((n for n, p in PRESETS.items() if all(getattr(s, k) == v for k, v in p.items())), None)
            self.preset.blockSignals(True)
            self.preset.setCurrentText(match or "Custom")
            self.preset.blockSignals(False)
        self.used_label.setText(describe_chain(s))
        self.settingsChanged.emit(s)
