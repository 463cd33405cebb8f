"""The card of the open ready-made experiment, shown above the Workbench while it is open.

Owns: ``ExperimentCard``: the experiment's title, its two-sentence explanation, a line of what
to try, one button per variant (the experiment with other knobs, checked while it is the one
shown), Run again and a close button. Everything is plain text (a teacher's file may hold
anything). It only shows and asks: the window applies the experiment. GUI thread only.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QButtonGroup, QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

from widgets.formatting import menu_text, plain_tip

__all__ = ["ExperimentCard", "font_with", "text_color", "panel_look"]

# no style sheet: a widget under one keeps the font it had when the application's font changes
# (presentation mode makes it larger), so colours and weights go through palettes and fonts
# that set only that, the rest inherited
_BACKGROUND = "#e8f1fb"
_TEXT = "#0b2545"


def font_with(*, bold: bool = False, italic: bool = False) -> QFont:
    """A font that sets only its weight / slant: family and size follow the parent's (and the
    application's, when presentation mode scales it)."""
    font = QFont()
    if bold:
        font.setBold(True)
    if italic:
        font.setItalic(True)
    return font


def text_color(widget: QWidget, color: str) -> None:
    """Set only the text colour of ``widget`` (the rest of its palette follows the application's)."""
    pal = QPalette()
    pal.setColor(QPalette.ColorRole.WindowText, QColor(color))
    widget.setPalette(pal)


def panel_look(frame: QFrame, background: str) -> None:
    """A filled, framed panel in ``background`` (only that colour set: the rest follows)."""
    pal = QPalette()
    pal.setColor(QPalette.ColorRole.Window, QColor(background))
    frame.setPalette(pal)
    frame.setAutoFillBackground(True)
    frame.setFrameShape(QFrame.Shape.StyledPanel)

class ExperimentCard(QFrame):
    """Title, explanation, what to try and the variants' buttons of one experiment."""

    variantRequested = Signal(int)  # the index of the variant's button
    runAgainRequested = Signal()
    closeRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("experimentCard")
        panel_look(self, _BACKGROUND)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 4, 4, 6)
        outer.setSpacing(3)
        top = QHBoxLayout()
        self.title_label = QLabel()
        self.title_label.setObjectName("experimentTitle")
        self.title_label.setFont(font_with(bold=True))
        top.addWidget(self.title_label, 1)
        self.run_again_button = QPushButton("Run again")
        self.run_again_button.setToolTip("Generate again with the prompt and the knobs as they are now "
                                         "(a new seed first when the experiment asks for one)")
        self.run_again_button.clicked.connect(self.runAgainRequested)
        top.addWidget(self.run_again_button, 0, Qt.AlignTop)
        self.close_button = QToolButton()
        self.close_button.setText("✕")
        self.close_button.setToolTip("Close the experiment (the prompt and the knobs stay as they are)")
        self.close_button.clicked.connect(self.closeRequested)
        top.addWidget(self.close_button, 0, Qt.AlignTop)
        outer.addLayout(top)
        self.explanation_label = QLabel()
        self.try_label = QLabel()
        self.try_label.setObjectName("experimentTry")
        self.try_label.setFont(font_with(italic=True))
        for label in (self.title_label, self.explanation_label, self.try_label):
            text_color(label, _TEXT)
            label.setTextFormat(Qt.PlainText)
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        outer.addWidget(self.explanation_label)
        outer.addWidget(self.try_label)
        self._variant_row = QHBoxLayout()
        self._variant_row.setSpacing(4)
        outer.addLayout(self._variant_row)
        self._group = QButtonGroup(self)
        self._group.setExclusive(True)
        self._buttons: list[QPushButton] = []
        self.setVisible(False)

    # ------------------------------------------------------------------ content
    def show_experiment(self, title: str, explanation: str, try_text: str, variants: list[str]) -> None:
        """Show an experiment: its texts and one checkable button per variant label."""
        self.title_label.setText(f"Experiment: {title}")
        self.title_label.setToolTip("")
        self.explanation_label.setText(explanation)
        self.set_try(try_text)
        for b in self._buttons:
            self._group.removeButton(b)
            self._variant_row.removeWidget(b)
            b.deleteLater()
        self._buttons = []
        while self._variant_row.count():  # the stretch
            self._variant_row.takeAt(0)
        for i, label in enumerate(variants):
            b = QPushButton(menu_text(label))
            b.setCheckable(True)
            b.setToolTip(plain_tip(f"Load this variant (its prompt and knobs) and run it: {label}"))
            b.clicked.connect(lambda _=False, k=i: self.variantRequested.emit(k))
            self._group.addButton(b, i)
            self._variant_row.addWidget(b)
            self._buttons.append(b)
        self._variant_row.addStretch(1)
        self.set_variant(None)

    def set_try(self, text: str) -> None:
        self.try_label.setText(f"Try: {text}" if text else "")
        self.try_label.setVisible(bool(text))

    def set_variant(self, index: int | None) -> None:
        """Check the button of variant ``index`` (None: the experiment as it came, none checked)."""
        self._group.setExclusive(False)
        for i, b in enumerate(self._buttons):
            b.setChecked(i == index)
        self._group.setExclusive(True)

    def set_busy(self, busy: bool) -> None:
        """While the model works the run buttons wait (a click would stop the run first anyway)."""
        self.run_again_button.setEnabled(not busy)

    # ------------------------------------------------------------------ reading (tests)
    def variant_buttons(self) -> list[QPushButton]:
        return list(self._buttons)

    def texts(self) -> dict[str, str]:
        return {"title": self.title_label.text(), "explanation": self.explanation_label.text(),
                "try": self.try_label.text()}
