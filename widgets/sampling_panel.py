"""The sampling panel: presets, every knob of the sampler chain with a tooltip (the classic
chain, the newer samplers with llama.cpp's names, and the chain's order as a reorderable list),
and the "values actually used" line.

Over 500 lines: a third of it is the knobs' tooltips (what each sampler does, in llama.cpp's
terms), kept beside the spin boxes they explain; the panel itself is one value (the settings)
shown on three tabs.

Owns: ``SamplingPanel`` and ``PRESETS``. Runs on the GUI thread. Produces a frozen
``SamplerSettings`` (``settings()``); a value out of range is refused at the widget with the
reason shown under the knobs.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractSpinBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.sampling import stage_names
from backends.base import SAMPLER_ORDER, SamplerSettings, parse_logit_bias

__all__ = ["SamplingPanel", "PRESETS", "describe_chain"]

_OFF = dict(top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0,
            top_n_sigma=-1.0, xtc_probability=0.0, dynatemp_range=0.0, dry_multiplier=0.0, mirostat=0,
            adaptive_target=-1.0)
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

#: the samplers beyond the classic chain, on their own tab (same form as ``_KNOBS``)
_MORE_KNOBS = [
    ("top_n_sigma", "Top-n-sigma", 2, 0.1,
     "Keep the tokens whose logit is within n standard deviations of the best logit (computed "
     "over the candidates' logits). Independent of temperature. -1 or 0 switches it off. "
     "llama.cpp's --top-nsigma."),
    ("xtc_probability", "XTC probability", 2, 0.05,
     "Exclude Top Choices: at each step, with this probability, remove every token at or above "
     "the threshold except the least likely of them, pushing the text off the beaten path. "
     "0 switches it off. llama.cpp's --xtc-probability."),
    ("xtc_threshold", "XTC threshold", 3, 0.01,
     "XTC's top choices are the tokens with at least this probability; above 0.5 at most one token "
     "can reach it, so XTC does nothing. llama.cpp's --xtc-threshold."),
    ("dynatemp_range", "Dynamic temp. range", 2, 0.05,
     "Dynamic temperature: each step's temperature lies between temperature - range and "
     "temperature + range, higher when the distribution is flat (high entropy), lower when it is "
     "sure. 0 = the plain temperature. llama.cpp's --dynatemp-range."),
    ("dynatemp_exponent", "Dynamic temp. exponent", 2, 0.1,
     "How the entropy maps to the temperature: (entropy / max entropy) ** exponent. "
     "llama.cpp's --dynatemp-exp."),
    ("dry_multiplier", "DRY multiplier", 2, 0.05,
     "DRY (don't repeat yourself): a token that would extend a repeat of the recent text is "
     "penalised by multiplier * base ** (repeat length - allowed length). 0 switches it off; "
     "0.8 is a common value. llama.cpp's --dry-multiplier."),
    ("dry_base", "DRY base", 2, 0.05,
     "How fast DRY's penalty grows with the repeat's length (below 1: off). llama.cpp's --dry-base."),
    ("dry_allowed_length", "DRY allowed length", None, 1,
     "Repeats up to this many tokens are not penalised. llama.cpp's --dry-allowed-length."),
    ("dry_penalty_last_n", "DRY window (last N)", None, 16,
     "How many recent tokens (prompt included) DRY searches for repeats. 0 = off. "
     "llama.cpp's --dry-penalty-last-n."),
    ("mirostat", "Mirostat (0, 1, 2)", None, 1,
     "Mirostat keeps the text's surprise near a target: 1 = Mirostat (top-k from a Zipf "
     "estimate), 2 = Mirostat 2.0 (cut tokens more surprising than mu). It replaces top-k, top-p "
     "and the rest of the chain, as in llama.cpp; the running mu is shown per step. 0 = off."),
    ("mirostat_tau", "Mirostat target (tau)", 2, 0.1,
     "Mirostat's target surprise in bits per token (mu starts at 2 tau). llama.cpp's --mirostat-ent."),
    ("mirostat_eta", "Mirostat rate (eta)", 3, 0.01,
     "How fast Mirostat's mu follows the observed surprise. llama.cpp's --mirostat-lr."),
    ("adaptive_target", "Adaptive-p target", 2, 0.05,
     "Adaptive-p favours tokens whose probability is near this target, adapting so the chosen "
     "tokens average it over time; it runs last and picks the token. Negative = off. "
     "llama.cpp's --adaptive-target (which also needs adaptive_p in --samplers)."),
    ("adaptive_decay", "Adaptive-p decay", 2, 0.01,
     "Decay of adaptive-p's moving average: its memory is about 1 / (1 - decay) tokens. "
     "llama.cpp's --adaptive-decay."),
]

#: the stages of the order list, with their names in llama.cpp's --samplers syntax
_ORDER_TIPS = {
    "penalties": "repeat, frequency and presence penalties",
    "dry": "DRY: penalises tokens that extend a repeat",
    "top_n_sigma": "top-n-sigma: keep logits within n standard deviations of the best",
    "top_k": "top-k: keep the k most likely",
    "typical": "typical-p (typ_p): keep the most typical tokens",
    "top_p": "top-p: keep the nucleus of mass p",
    "min_p": "min-p: keep tokens at least min-p times as likely as the best",
    "xtc": "XTC: sometimes remove the top choices",
    "temperature": "temperature (dynamic when its range is set)",
}


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


def _stage_text(name: str, s: SamplerSettings) -> str:
    if name == "penalties":
        return (f"penalties(repeat {s.repeat_penalty:g}, freq {s.frequency_penalty:g}, "
                f"presence {s.presence_penalty:g}, last {s.penalty_last_n})")
    if name == "dry":
        return (f"DRY(x{s.dry_multiplier:g}, base {s.dry_base:g}, allowed {s.dry_allowed_length}, "
                f"last {s.dry_penalty_last_n}, {len(s.dry_sequence_breakers)} breakers)")
    if name == "top_n_sigma":
        return f"top-n-sigma {s.top_n_sigma:g}"
    if name == "top_k":
        return f"top-k {s.top_k}"
    if name == "typical":
        return f"typical {s.typical_p:g}"
    if name == "top_p":
        return f"top-p {s.top_p:g}"
    if name == "min_p":
        return f"min-p {s.min_p:g}"
    if name == "xtc":
        return f"XTC(p {s.xtc_probability:g}, threshold {s.xtc_threshold:g})"
    if name == "temperature":
        if s.greedy:
            return "temperature 0 → greedy (argmax)"
        if s.dynatemp_range > 0 and s.mirostat == 0:
            return f"dynamic temperature {s.temperature:g} ± {s.dynatemp_range:g} (exp {s.dynatemp_exponent:g})"
        return f"temperature {s.temperature:g}"
    if name in ("mirostat", "mirostat_v2"):
        version = "1" if name == "mirostat" else "2"
        return f"Mirostat v{version}(tau {s.mirostat_tau:g}, eta {s.mirostat_eta:g}; mu from {2 * s.mirostat_tau:g})"
    if name == "adaptive_p":
        return f"adaptive-p(target {s.adaptive_target:g}, decay {s.adaptive_decay:g})"
    return name


def describe_chain(s: SamplerSettings) -> str:
    """The chain exactly as it will run, stage by stage (inactive stages left out), then the
    order in llama.cpp's ``--samplers`` syntax."""
    parts = []
    if s.logit_bias:
        parts.append(f"logit bias ({len(s.logit_bias)})")
    names = stage_names(s)
    parts += [_stage_text(n, s) for n in names]
    if not (s.greedy and "temperature" in names):  # without the temperature stage, 0 is not greedy
        parts.append(f"draw (seed {s.seed})")
    tail = f"; min_keep {s.min_keep}; max {s.max_tokens} tokens"
    if s.stop:
        tail += "; stop at " + ", ".join(repr(x) for x in s.stop)
    order = "; order ignored: Mirostat replaces the chain" if s.mirostat else f"; order {s.order_string}"
    return " → ".join(parts) + tail + order


def _parse_stops(text: str) -> tuple[str, ...]:
    out = []
    for part in text.split("|"):
        part = part.replace("\\n", "\n").replace("\\t", "\t")
        if part:
            out.append(part)
    return tuple(out)


def _format_stops(stops: tuple[str, ...]) -> str:
    return "|".join(s.replace("\n", "\\n").replace("\t", "\\t") for s in stops)


def _format_bias(bias) -> str:
    out = []
    for tok, b in bias:
        amount = "-inf" if b == float("-inf") else f"{b:+g}"
        out.append(f"{tok}{amount}")
    return ", ".join(out)


def _parse_bias(text: str) -> tuple[tuple[int | str, float], ...]:
    """"15043+1, Paris-inf" (commas between entries; a text entry is taken as typed)."""
    return tuple(parse_logit_bias(part.strip()) for part in text.split(",") if part.strip())


def _spin(name: str, decimals: int | None, step: float, tip: str, default) -> QAbstractSpinBox:
    lo, hi = SamplerSettings.LIMITS[name]
    w: QAbstractSpinBox
    if decimals is None:
        w = _IntSpin()
        w.setRange(int(lo), int(min(hi, 2**31 - 1)))
    else:
        w = _FloatSpin()
        w.setDecimals(decimals)
        w.setRange(lo, hi)
    w.setSingleStep(step)
    w.setKeyboardTracking(False)
    w.setValue(default)
    w.setToolTip(f"{tip}\nAllowed: {lo:g} to {hi:g}.")
    w.setObjectName(name)
    return w


class SamplingPanel(QWidget):
    """The knobs on three tabs: the classic chain, the newer samplers, and the chain's order (a
    list to drag or move with the buttons; unticked stages do not run). ``settings()`` keeps
    whatever a shown run's settings hold that has no widget."""

    settingsChanged = Signal(object)  # SamplerSettings

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._spins: dict[str, QAbstractSpinBox] = {}
        self._updating = False
        self._base = SamplerSettings()
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
        self.import_button = QPushButton("Import…")
        self.import_button.setToolTip(
            "Load a preset file: a Samplescope preset, or a SillyTavern, KoboldCpp or text-generation-webui "
            "sampler preset (each field is mapped to llama.cpp's knob of the same meaning; what has no "
            "equivalent is listed)")
        self.import_button.clicked.connect(self._import_dialog)
        top.addWidget(self.import_button)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save these settings as a preset file (JSON), order included")
        self.export_button.clicked.connect(self._export_dialog)
        top.addWidget(self.export_button)
        lay.addLayout(top)
        self._extra: dict[str, SamplerSettings] = {}  # presets with whole settings: imported, the model's own
        self.import_note = QLabel("")
        self.import_note.setTextFormat(Qt.PlainText)
        self.import_note.setWordWrap(True)
        lay.addWidget(self.import_note)
        self.error_label = QLabel("")
        self.error_label.setTextFormat(Qt.PlainText)
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #b00020;")
        self.tabs = QTabWidget()
        defaults = SamplerSettings()
        basic = QWidget()
        form = QFormLayout(basic)
        for name, label, decimals, step, tip in _KNOBS:
            w = self._add_spin(name, decimals, step, tip, getattr(defaults, name))
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
        self.tabs.addTab(basic, "Chain")
        more = QWidget()
        mform = QFormLayout(more)
        for name, label, decimals, step, tip in _MORE_KNOBS:
            w = self._add_spin(name, decimals, step, tip, getattr(defaults, name))
            lab = QLabel(label)
            lab.setToolTip(w.toolTip())
            mform.addRow(lab, w)
        self.breakers_edit = QLineEdit(_format_stops(defaults.dry_sequence_breakers))
        self.breakers_edit.setToolTip(
            "DRY's sequence breakers, separated by |: a repeat does not reach back across one of "
            "these texts. Write a newline as \\n. Empty: no breakers. llama.cpp's --dry-sequence-breaker.")
        self.breakers_edit.editingFinished.connect(self._on_changed)
        mform.addRow("DRY breakers", self.breakers_edit)
        self.bias_edit = QLineEdit()
        self.bias_edit.setPlaceholderText("e.g. 15043+1, Paris-inf")
        self.bias_edit.setToolTip(
            "Logit bias: TOKEN+BIAS or TOKEN-BIAS entries separated by commas. TOKEN is a token id, or "
            "a text whose every token gets the bias; -inf bans it. Added to the logits before the chain, "
            "as llama.cpp's -l / --logit-bias.")
        self.bias_edit.editingFinished.connect(self._on_changed)
        mform.addRow("Logit bias", self.bias_edit)
        self.tabs.addTab(more, "More samplers")
        order_page = QWidget()
        olay = QVBoxLayout(order_page)
        hint = QLabel("The chain runs top to bottom; untick a stage to leave it out. Drag to reorder, "
                      "or select one and use the buttons. Adaptive-p (when on) always runs last; "
                      "Mirostat replaces the whole order.")
        hint.setWordWrap(True)
        olay.addWidget(hint)
        self.order_list = QListWidget()
        self.order_list.setDragDropMode(QAbstractItemView.InternalMove)
        self.order_list.setToolTip("The sampler chain's order (llama.cpp's --samplers).")
        for name in SAMPLER_ORDER:
            item = QListWidgetItem(name if name != "typical" else "typ_p")
            item.setData(Qt.UserRole, name)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable | Qt.ItemIsDragEnabled)
            item.setFlags(item.flags() & ~Qt.ItemIsDropEnabled)
            item.setCheckState(Qt.Checked)
            item.setToolTip(_ORDER_TIPS.get(name, name))
            self.order_list.addItem(item)
        self.order_list.itemChanged.connect(self._on_changed)
        self.order_list.model().rowsMoved.connect(self._on_changed)
        olay.addWidget(self.order_list, 1)
        buttons = QHBoxLayout()
        self.up_button = QPushButton("Move up")
        self.up_button.setShortcut("Alt+Up")
        self.up_button.setToolTip("Move the selected stage one place earlier (Alt+Up)")
        self.up_button.clicked.connect(lambda: self._move(-1))
        self.down_button = QPushButton("Move down")
        self.down_button.setShortcut("Alt+Down")
        self.down_button.setToolTip("Move the selected stage one place later (Alt+Down)")
        self.down_button.clicked.connect(lambda: self._move(1))
        self.default_order_button = QPushButton("llama.cpp order")
        self.default_order_button.setToolTip("Back to llama.cpp's default order, every stage ticked")
        self.default_order_button.clicked.connect(lambda: self._set_order(SAMPLER_ORDER))
        for b in (self.up_button, self.down_button, self.default_order_button):
            buttons.addWidget(b)
        olay.addLayout(buttons)
        self.tabs.addTab(order_page, "Order")
        lay.addWidget(self.tabs, 1)
        lay.addWidget(self.error_label)
        used_title = QLabel("Values actually used")
        used_title.setStyleSheet("font-weight: bold;")
        lay.addWidget(used_title)
        self.used_label = QLabel()
        self.used_label.setTextFormat(Qt.PlainText)
        self.used_label.setWordWrap(True)
        self.used_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.used_label.setToolTip("The sampler chain in the order it runs, active stages only, and the "
                                   "order in llama.cpp's --samplers syntax.")
        lay.addWidget(self.used_label)
        self.preset.setCurrentText("Balanced")
        self._apply_preset("Balanced")

    def _add_spin(self, name: str, decimals: int | None, step: float, tip: str, default) -> QAbstractSpinBox:
        w = _spin(name, decimals, step, tip, default)
        w.valueChanged.connect(self._on_changed)
        w.refused.connect(self.error_label_show)
        self._spins[name] = w
        return w

    # ------------------------------------------------------------------ the order
    def order(self) -> tuple[str, ...]:
        """The ticked stages, top to bottom."""
        out = []
        for i in range(self.order_list.count()):
            item = self.order_list.item(i)
            if item.checkState() == Qt.Checked:
                out.append(item.data(Qt.UserRole))
        return tuple(out)

    def _set_order(self, order) -> None:
        """Show ``order``: its stages first, ticked, in that order; the others after, unticked."""
        was = self._updating
        self._updating = True
        try:
            items = {self.order_list.item(i).data(Qt.UserRole): i for i in range(self.order_list.count())}
            rest = [n for n in SAMPLER_ORDER if n not in order]
            self.order_list.clear()
            for name in [n for n in order if n in items] + rest:
                item = QListWidgetItem(name if name != "typical" else "typ_p")
                item.setData(Qt.UserRole, name)
                item.setFlags((item.flags() | Qt.ItemIsUserCheckable | Qt.ItemIsDragEnabled) & ~Qt.ItemIsDropEnabled)
                item.setCheckState(Qt.Checked if name in order else Qt.Unchecked)
                item.setToolTip(_ORDER_TIPS.get(name, name))
                self.order_list.addItem(item)
        finally:
            self._updating = was
        self._on_changed()

    def _move(self, delta: int) -> None:
        row = self.order_list.currentRow()
        new = row + delta
        if row < 0 or not 0 <= new < self.order_list.count():
            return
        self._updating = True
        try:
            item = self.order_list.takeItem(row)
            self.order_list.insertItem(new, item)
            self.order_list.setCurrentRow(new)
        finally:
            self._updating = False
        self._on_changed()

    # ------------------------------------------------------------------ values
    def settings(self) -> SamplerSettings:
        """The knobs as set, over what the last shown settings hold that has no widget."""
        kwargs: dict = {name: w.value() for name, w in self._spins.items()}
        kwargs["stop"] = _parse_stops(self.stop_edit.text())
        kwargs["dry_sequence_breakers"] = _parse_stops(self.breakers_edit.text())
        try:
            kwargs["logit_bias"] = _parse_bias(self.bias_edit.text())
        except ValueError:
            kwargs["logit_bias"] = self._base.logit_bias  # refused in _on_changed, with the reason
        order = self.order()
        adaptive = ("adaptive_p",) if "adaptive_p" in self._base.samplers else ()
        kwargs["samplers"] = order + adaptive
        return self._base.replace(**kwargs)

    def set_settings(self, s: SamplerSettings, preset: str | None = None) -> None:
        self._updating = True
        try:
            self._base = s
            for name, w in self._spins.items():
                w.setValue(getattr(s, name))
            self.stop_edit.setText(_format_stops(s.stop))
            self.breakers_edit.setText(_format_stops(s.dry_sequence_breakers))
            self.bias_edit.setText(_format_bias(s.logit_bias))
            self._set_order(tuple(n for n in s.samplers if n != "adaptive_p"))
            if preset is not None:
                self.preset.setCurrentText(preset)
        finally:
            self._updating = False
        self._on_changed()

    # ------------------------------------------------------------------ presets
    def add_preset(self, name: str, settings: SamplerSettings, *, select: bool = True) -> None:
        """Offer ``settings`` as the preset ``name`` (an imported file, the model's own)."""
        self._extra[name] = settings
        if self.preset.findText(name) < 0:
            self.preset.insertItem(self.preset.count() - 1, name)  # before "Custom"
        if select:
            self.preset.setCurrentText(name)

    def remove_preset(self, name: str) -> None:
        if self._extra.pop(name, None) is not None:
            i = self.preset.findText(name)
            if i >= 0:
                self.preset.removeItem(i)

    def set_model_preset(self, found) -> None:
        """The loaded model's own recommended settings (``app.core.presets.model_preset``), or
        None: the previous model's preset goes away."""
        for name in [n for n in self._extra if n.endswith("(model's own)")]:
            self.remove_preset(name)
        if found is not None:
            self.add_preset(found.name, found.settings, select=False)

    def import_preset(self, path: str):
        """Read a preset file and select it; returns the ``PresetImport`` (PresetError or OSError
        says why not, and nothing changes)."""
        from pathlib import Path

        from app.core.presets import read_preset

        got = read_preset(Path(path).read_text(encoding="utf-8"), file_name=Path(path).name, base=self.settings())
        self.add_preset(got.name, got.settings)
        self.import_note.setText(got.report())
        return got

    def export_preset(self, path: str, name: str | None = None) -> str:
        from pathlib import Path

        from app.core.paths import atomic_write_text
        from app.core.presets import preset_json

        name = name or Path(path).stem
        atomic_write_text(Path(path), preset_json(name, self.settings()))
        return path

    def _import_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        from app.core.presets import PresetError

        path, _ = QFileDialog.getOpenFileName(self, "Import a sampler preset", "",
                                              "Presets (*.json *.yaml *.yml *.settings);;All files (*)")
        if not path:
            return
        try:
            self.import_preset(path)
        except (PresetError, OSError, UnicodeDecodeError) as exc:
            self.error_label.setText(f"Preset not imported: {exc}")

    def _export_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self, "Export the sampler settings", "preset.json", "Presets (*.json)")
        if not path:
            return
        try:
            self.export_preset(path)
        except OSError as exc:
            self.error_label.setText(f"Preset not saved: {exc}")

    def _apply_preset(self, name: str) -> None:
        if name in self._extra:
            self.set_settings(self._extra[name])
            return
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
        try:
            _parse_bias(self.bias_edit.text())
        except ValueError as exc:
            self.error_label.setText(f"Logit bias not used: {exc}")
        s = self.settings()
        if not from_preset:
            match = next((n for n, x in self._extra.items() if x == s), None)
            match = match or next((n for n, p in PRESETS.items() if all(getattr(s, k) == v for k, v in p.items())),
                                  None)
            self.preset.blockSignals(True)
            self.preset.setCurrentText(match or "Custom")
            self.preset.blockSignals(False)
        self.used_label.setText(describe_chain(s))
        self.settingsChanged.emit(s)
