"""Guess the next token, the class game, in the window: step mode with the answer hidden.

Owns ``GuessMixin``, a part of ``MainWindow``: Run > Guess the next token (Ctrl+G) opens the guess
panel (``widgets.guess_panel``) in a dock and starts a step-mode run; while the game is on the
pending distribution stays hidden (``guess_hides_pending``: the chart shows the step just
revealed instead); a guess (typed, or picked from the shuffled shortlist of the step's likeliest
tokens) takes the step through the controller (the model draws as the knobs say), and when the
step arrives the reveal is scored by ``app.core.guess`` from that step's full logits (the what-if
memory holds them) and shown with the running score. Scores export as CSV. GUI thread; the
tokenizer is used only between two steps, while the model worker is idle.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QDockWidget, QFileDialog

from app.core.guess import POINTS_RULE, GuessGame, guess_token, score_guess, shortlist
from backends.base import Step
from widgets.guess_panel import GuessPanel, reveal_text

__all__ = ["GuessMixin"]


class GuessMixin:
    """The guess game part of ``MainWindow`` (see the module docstring)."""

    guess_game: GuessGame
    _guess_waiting: tuple[str, int, int] | None = None  # (guess, token id, step index) until the step arrives

    def _build_guess(self, run_menu) -> None:
        """The menu action, the panel in its dock (hidden) and the connections."""
        self.guess_game = GuessGame()
        self.guess_panel = GuessPanel()
        self.guess_panel.set_rule(POINTS_RULE)
        self.guess_dock = QDockWidget("Guess the next token", self)
        self.guess_dock.setObjectName("dock_guess")
        self.guess_dock.setWidget(self.guess_panel)
        self.addDockWidget(Qt.BottomDockWidgetArea, self.guess_dock)
        self.guess_dock.hide()
        self.guess_action = self._action(
            run_menu, "&Guess the next token", self.set_guess_mode, "Ctrl+G",
            "A class game on step mode: before each step the class guesses the next token; the reveal shows "
            "the guess's rank and probability before and after the samplers, the token drawn, and the score",
            checkable=True)
        self.guess_panel.guessed.connect(self._guess_made)
        self.guess_panel.newGame.connect(self.new_guess_game)
        self.guess_panel.exportRequested.connect(lambda: self.export_guess_scores())
        self.guess_dock.visibilityChanged.connect(self._guess_dock_shown)
        c = self.controller
        c.pendingChanged.connect(self._guess_on_pending)
        c.stepsAdded.connect(self._guess_on_steps)
        c.generationFinished.connect(self._guess_on_finished)

    # ------------------------------------------------------------ the mode
    @property
    def guessing(self) -> bool:
        return bool(getattr(self, "guess_action", None)) and self.guess_action.isChecked()

    def guess_hides_pending(self) -> bool:
        """While the game is on, the next distribution is the answer: it stays hidden."""
        return self.guessing

    def set_guess_mode(self, on: bool) -> None:
        if on and not self.controller.capabilities.step_mode and self.controller.capabilities.kind != "none":
            self.show_banner(f"Guess the next token is played in step mode, which "
                             f"{self.controller.capabilities.why_not('step_mode')}.")
            self.guess_action.setChecked(False)
            return
        self.guess_dock.setVisible(on)
        if on:
            self.new_guess_game()
        else:
            self._guess_waiting = None
            self.distribution_plot.set_pick_mode(self.step_mode_action.isChecked())
            self._mark_dirty()

    def _guess_dock_shown(self, visible: bool) -> None:
        if not visible and self.guessing and not self.isMinimized():  # the dock's own close button
            self.guess_action.setChecked(False)
        elif visible and not self.guessing:  # the window's saved layout brought it back: no game is on
            QTimer.singleShot(0, lambda: self.guessing or self.guess_dock.hide())

    def new_guess_game(self) -> None:
        """Score 0, and a new step-mode run from the prompt (its first distribution hidden)."""
        self.guess_game.reset()
        self.guess_panel.clear()
        self._guess_waiting = None
        if self.controller.in_step_mode_run:
            self.controller.finish_step_run()
        self.guess_panel.show_end("The model reads the prompt…")
        self.step()
        self.distribution_plot.set_pick_mode(False)  # the chart shows the reveal: no token is chosen there

    # ------------------------------------------------------------ a round
    def _guess_on_pending(self, step: Step | None) -> None:
        if not self.guessing or step is None:
            return
        seed = int(self.controller.trace.settings.seed) if self.controller.trace is not None else 0
        self.guess_panel.ask(step.index, shortlist(step, GuessPanel.N_CHOICES, seed=seed * 7919 + step.index))

    def _guess_made(self, text: str, token_id: int) -> None:
        c = self.controller
        pending, engine = self._pending, c.local_engine
        if not self.guessing or pending is None or engine is None or c.trace is None:
            return
        index = pending.index
        if token_id < 0:
            kept = c.logit_memory.get(c.trace_memory_key, index) if c.trace_memory_key is not None else None
            found = guess_token(engine, text, kept[1] if kept is not None else None, pending)
            if found is None:
                self.guess_panel.set_ready(True)
                self.statusBar().showMessage("That guess is no token: type a word or a piece of one.", 5000)
                return
            token_id = found
        self._guess_waiting = (text, int(token_id), index)
        self.step()  # the model draws its token as the knobs say
        self.distribution_plot.set_pick_mode(False)

    def _guess_on_steps(self) -> None:
        waiting, trace = self._guess_waiting, self.controller.trace
        if waiting is None or trace is None or len(trace.steps) <= waiting[2]:
            return
        text, token_id, index = waiting
        self._guess_waiting = None
        c = self.controller
        engine = c.local_engine
        kept = c.logit_memory.get(c.trace_memory_key, index) if c.trace_memory_key is not None else None
        prompt_tokens = kept[0] if kept is not None else ()
        r = score_guess(text, token_id, trace.steps[index], logits=kept[1] if kept is not None else None,
                        settings=trace.settings, prompt_tokens=prompt_tokens, steps=trace.steps, index=index,
                        engine=engine, piece_of=engine.piece)
        self.guess_game.add(r)
        self.guess_panel.show_reveal(reveal_text(r), self.guess_game.score, len(self.guess_game.rounds))
        self._mark_dirty()

    def _guess_on_finished(self, fin) -> None:
        if self.guessing:
            self.guess_panel.show_end(f"The run ended ({fin.reason}). Final score: {self.guess_game.score}. "
                                      "New game plays again.")

    # ------------------------------------------------------------ export
    def export_guess_scores(self, path: str | None = None) -> str | None:
        """Every round as CSV (``app.core.guess.CSV_COLUMNS``)."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export guess scores", "samplescope-guesses.csv",
                                                  "CSV (*.csv)")
        if not path:
            return None
        try:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(self.guess_game.to_csv())
        except OSError as exc:
            self.show_banner(f"The scores were not saved: {exc}")
            return None
        self.statusBar().showMessage(f"Saved {len(self.guess_game.rounds)} rounds to {path}", 5000)
        return path
