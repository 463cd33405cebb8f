"""The guess-the-next-token panel: the class's guess before each step, and the reveal after it.

Owns ``GuessPanel``: a line to type a guess, a shuffled shortlist to pick from instead, Reveal
(Enter), the reveal itself (the guess's rank and probability under the raw and the final
distribution, the token drawn, the points), the running score, New game and Export scores
(CSV). It only shows what it is given and says what was asked (``guessed``, ``newGame``,
``exportRequested``); the game is played by ``app.window_guess``. Token and guess texts are
shown as plain text (escaped whitespace, ``menu_text`` on buttons). GUI thread only.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLineEdit, QPushButton, QVBoxLayout, QWidget

from widgets.formatting import menu_text, pct
from widgets.lab_controls import plain_label

__all__ = ["GuessPanel", "shown_token", "reveal_text"]


def shown_token(text: str) -> str:
    """A token as the class reads it: quoted, with its spaces and line breaks visible."""
    return "“" + text.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣") + "”"


class GuessPanel(QWidget):
    """See the module docstring. ``guessed(text, token_id)``: ``token_id`` -1 for a typed guess."""

    guessed = Signal(str, int)
    newGame = Signal()
    exportRequested = Signal()

    N_CHOICES = 5

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 2, 6, 2)
        top = QHBoxLayout()
        self.question = plain_label("Start a game: the model is about to choose its next token.")
        self.question.setStyleSheet("font-weight: bold")
        top.addWidget(self.question, 1)
        self.score_label = plain_label("Score: 0", wrap=False)
        self.score_label.setStyleSheet("font-weight: bold")
        top.addWidget(self.score_label)
        self.new_button = QPushButton("New game")
        self.new_button.setToolTip("Start again from the prompt, with the score at 0")
        self.new_button.clicked.connect(self.newGame)
        top.addWidget(self.new_button)
        self.export_button = QPushButton("Export scores…")
        self.export_button.setToolTip("Save every round (guess, ranks, probabilities, token drawn, points) as CSV")
        self.export_button.clicked.connect(self.exportRequested)
        top.addWidget(self.export_button)
        lay.addLayout(top)
        row = QHBoxLayout()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("Type your guess for the next token…")
        self.edit.setToolTip("The class's guess for the next token, e.g. Paris (a leading space is added when the "
                             "model would rather write the word that way). Enter reveals.")
        self.edit.returnPressed.connect(self._submit_typed)
        row.addWidget(self.edit, 1)
        self.reveal_button = QPushButton("Reveal")
        self.reveal_button.setToolTip("Take the step (the model draws its token) and show how good the guess was "
                                      "(Enter)")
        self.reveal_button.setDefault(True)
        self.reveal_button.clicked.connect(self._submit_typed)
        row.addWidget(self.reveal_button)
        lay.addLayout(row)
        choices = QHBoxLayout()
        choices.addWidget(plain_label("…or pick one:", wrap=False))
        self.choice_buttons: list[QPushButton] = []
        for _ in range(self.N_CHOICES):
            b = QPushButton()
            b.setToolTip("Guess this token and reveal (the model's five likeliest tokens here, shuffled)")
            b.clicked.connect(self._submit_choice)
            b.hide()
            choices.addWidget(b)
            self.choice_buttons.append(b)
        choices.addStretch(1)
        lay.addLayout(choices)
        self.reveal = plain_label("")
        self.reveal.setTextInteractionFlags(Qt.TextSelectableByMouse)
        lay.addWidget(self.reveal)
        lay.addStretch(1)
        self._choices: list[tuple[int, str]] = []
        self.set_ready(False)

    # ------------------------------------------------------------ what the game shows
    def set_rule(self, rule: str) -> None:
        self.score_label.setToolTip(rule)

    def ask(self, index: int, choices: list[tuple[int, str]]) -> None:
        """Step ``index`` is next: the guess is open, with ``choices`` (token id, text) to pick."""
        self._choices = list(choices)
        self.question.setText(f"Token {index + 1}: what will the model write next?")
        for b, (_, text) in zip(self.choice_buttons, self._choices):
            b.setText(menu_text(shown_token(text)))
            b.show()
        for b in self.choice_buttons[len(self._choices):]:
            b.hide()
        self.edit.clear()
        self.set_ready(True)
        self.edit.setFocus()

    def set_ready(self, ready: bool) -> None:
        """Whether a guess can be made now (not while the step is being taken)."""
        for w in (self.edit, self.reveal_button, *self.choice_buttons):
            w.setEnabled(ready)

    def show_reveal(self, text: str, score: int, rounds: int) -> None:
        self.reveal.setText(text)
        self.score_label.setText(f"Score: {score} after {rounds} round{'s' if rounds != 1 else ''}")

    def show_end(self, text: str) -> None:
        self.question.setText(text)
        self.set_ready(False)
        for b in self.choice_buttons:
            b.hide()

    def clear(self) -> None:
        self.reveal.setText("")
        self.score_label.setText("Score: 0")

    # ------------------------------------------------------------ input
    def _submit_typed(self) -> None:
        text = self.edit.text()
        if text.strip() and self.edit.isEnabled():
            self.set_ready(False)
            self.guessed.emit(text, -1)

    def _submit_choice(self) -> None:
        b = self.sender()
        i = self.choice_buttons.index(b) if b in self.choice_buttons else -1
        if 0 <= i < len(self._choices):
            self.set_ready(False)
            tid, text = self._choices[i]
            self.guessed.emit(text, int(tid))


def reveal_text(r, pct_=pct) -> str:
    """The reveal of a ``GuessRound`` in words."""
    rank_raw = f"rank {r.rank_raw:,}" if r.rank_raw is not None else "below the top alternatives"
    final = f"rank {r.rank_final:,}, {pct_(r.p_final)}" if r.rank_final is not None else "cut by the samplers"
    verdict = "Right on!" if r.hit else "The model's favourite!" if r.rank_raw == 1 else (
        "Close: in its top 10." if r.points == 1 else "Not this time.")
    lines = [
        f"Your guess {shown_token(r.guess_token)}: {rank_raw} for the model ({pct_(r.p_raw)}), after the samplers "
        f"{final}.",
        f"Drawn: {shown_token(r.drawn_token)} ({pct_(r.p_drawn)}).  {verdict}  +{r.points}",
    ]
    if not r.exact:
        lines.append("(From the step's top alternatives: this step's full distribution is not kept.)")
    return "\n".join(lines)
