"""Ready-made experiments and the first-run hint in the window: a mixin of ``MainWindow``.

Owns ``ExperimentsMixin``: the Experiments menu (the shipped experiments, the user's from
``config_dir()/experiments``, a line for each file that could not be used, the folder; read again
each time the menu opens, by ``app.core.experiments_catalog``), opening an experiment (the
Workbench tab, its prompt, its knobs through the sampling panel's ``set_settings``, step mode on
or off, then the window's own ``generate`` — the first step in step mode — when it runs at once;
a run in progress is stopped first), the card above the Workbench that shows its explanation
while it is open (``widgets.experiment_card``: variants, Run again, close) and the view it asks
for once its run is on screen (a stage of the distribution, a selected step). Also the first-run
hint (``widgets.hint_bar``): shown by ``offer_first_run_hint`` until dismissed, which is saved
in ``AppSettings.show_first_run_hint`` at once. GUI thread.
"""

from __future__ import annotations

import logging
import random

from PySide6.QtCore import QTimer, QUrl
from PySide6.QtGui import QDesktopServices

from app.core.experiments_catalog import Catalog, Experiment, Variant, load_catalog, user_dir
from app.workbench_control import State
from widgets.experiment_card import ExperimentCard
from widgets.formatting import menu_text, plain_tip
from widgets.hint_bar import HintBar

log = logging.getLogger(__name__)

__all__ = ["ExperimentsMixin", "FIRST_RUN_HINT"]

FIRST_RUN_HINT = ("New here? Press Ctrl+Enter to generate from the prompt, then hover a token for the model's "
                  "alternatives and click it to see its distribution. The Experiments menu loads ready-made "
                  "demonstrations in one click; Ctrl+T then F10 steps one token at a time; F11 presents.")


class ExperimentsMixin:
    """The experiments part of ``MainWindow`` (see the module docstring)."""

    #: the experiment shown in the card (None: none open)
    experiment: Experiment | None = None
    #: the variant of it shown (None: the experiment as it came)
    experiment_variant: int | None = None
    experiment_catalog: Catalog = Catalog((), ())

    # ------------------------------------------------------------------ building
    def _build_experiments(self, menubar) -> None:
        """The Experiments menu, the card and the hint bar (above the tabs), their connections."""
        self.experiments_menu = menubar.addMenu("&Experiments")
        self.experiments_menu.setToolTipsVisible(True)
        self.experiments_menu.aboutToShow.connect(self.reload_experiments)
        self.experiment_card = ExperimentCard()
        self.first_run_hint = HintBar()
        layout = self.centralWidget().layout()
        layout.insertWidget(layout.indexOf(self.banner) + 1, self.first_run_hint)
        layout.insertWidget(layout.indexOf(self.lab_tabs), self.experiment_card)
        self.experiment_card.variantRequested.connect(self._experiment_variant)
        self.experiment_card.runAgainRequested.connect(self.run_experiment_again)
        self.experiment_card.closeRequested.connect(self.close_experiment)
        self.first_run_hint.dismissed.connect(self._first_run_hint_dismissed)
        self.lab_tabs.currentChanged.connect(lambda _i: self._experiment_card_visibility())
        c = self.controller
        c.traceReset.connect(self._experiment_on_trace_reset)
        c.stateChanged.connect(self._experiment_on_state)
        c.modelLoaded.connect(self._experiment_on_model_loaded)
        self._experiment_run_on_load = False  # run the experiment once the model being loaded is in
        self._experiment_then = None  # what to do once a run that had to stop first has stopped
        self._experiment_view: tuple[str, int | None] | None = None  # (stage, step) for the next run
        self._experiment_view_trace = None  # the run it is for
        self._experiment_timer = QTimer(self)  # applies the view once the run is on screen
        self._experiment_timer.setInterval(40)
        self._experiment_timer.timeout.connect(self._experiment_apply_view)
        self._experiment_logged: set[str] = set()
        self.reload_experiments()

    # ------------------------------------------------------------------ the menu
    def reload_experiments(self) -> Catalog:
        """Read the shipped and the user's experiments again and rebuild the menu from them; a
        file that cannot be used is a disabled line naming it and why (and a log warning)."""
        catalog = self.experiment_catalog = load_catalog()
        menu = self.experiments_menu
        menu.clear()
        for exp in catalog.of("built-in"):
            self._experiment_action(menu, exp)
        menu.addSection("Your experiments")
        mine = catalog.of("user")
        for exp in mine:
            self._experiment_action(menu, exp)
        if not mine:
            none = menu.addAction("(none yet: add a .json file to the experiments folder)")
            none.setStatusTip(f"A teacher's experiments are .json files in {user_dir()}; the README's "
                              "\"Ready-made experiments\" says what they hold")
            none.setEnabled(False)
        for problem in catalog.problems:
            line = f"Not loaded: {problem}"
            act = menu.addAction(menu_text(line if len(line) <= 110 else line[:109] + "…"))
            act.setToolTip(plain_tip(line))
            act.setStatusTip(f"{line} (mend the file and open this menu again)")
            act.setEnabled(False)
            if line not in self._experiment_logged:
                self._experiment_logged.add(line)
                log.warning("experiment %s (%s) skipped: %s", problem.name, problem.source, problem.message)
        menu.addSeparator()
        folder = menu.addAction("Open the experiments folder…")
        folder.setToolTip(plain_tip(f"Add an experiment: a .json file in {user_dir()} (README, \"Ready-made experiments\")"))
        folder.triggered.connect(self.open_experiments_folder)
        return catalog

    def _experiment_action(self, menu, exp: Experiment) -> None:
        act = menu.addAction(menu_text(exp.title))
        act.setToolTip(plain_tip(exp.explanation))
        act.setStatusTip(exp.explanation)
        act.triggered.connect(lambda _=False, e=exp: self.open_experiment(e))

    def open_experiments_folder(self) -> None:
        folder = user_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.show_banner(f"The experiments folder {folder} cannot be made: {exc}")
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
        self.statusBar().showMessage(f"Experiments folder: {folder}", 15000)

    # ------------------------------------------------------------------ opening
    def open_experiment(self, exp: Experiment | str, variant: int | None = None) -> Experiment | None:
        """Show experiment ``exp`` (or the one of that file name) and, when it runs at once,
        start its run; ``variant`` is the index of one of its variants."""
        if isinstance(exp, str):
            found = self.experiment_catalog.get(exp) or self.reload_experiments().get(exp)
            if found is None:
                self.show_banner(f"There is no experiment {exp!r} (Experiments menu).")
                return None
            exp = found
        if variant is not None and not 0 <= variant < len(exp.variants):
            variant = None
        self.experiment, self.experiment_variant = exp, variant
        v = exp.variants[variant] if variant is not None else None
        self.experiment_card.show_experiment(exp.title, exp.explanation, v.try_text if v else exp.try_text,
                                             [x.label for x in exp.variants])
        self.experiment_card.set_variant(variant)
        self.lab_tabs.setCurrentIndex(0)  # the Workbench
        self._experiment_card_visibility()
        if self.guessing:
            self.guess_action.setChecked(False)  # the game's step mode is not the experiment's
        self._experiment_when_idle(lambda: self._experiment_load(exp, v))
        return exp

    def _experiment_variant(self, index: int) -> None:
        if self.experiment is not None:
            self.open_experiment(self.experiment, index)

    def _experiment_load(self, exp: Experiment, v: Variant | None) -> None:
        """Prompt, knobs, step mode and view; then the run when the experiment runs at once."""
        if self.experiment is not exp:  # another one was opened while a run was stopping
            return
        prompt, settings = (v.prompt, v.settings) if v else (exp.prompt, exp.settings)
        step_mode, run = (v.step_mode, v.run) if v else (exp.step_mode, exp.run)
        if exp.fresh_seed:
            settings = settings.replace(seed=random.randrange(1, 2**31 - 1))
        self.prompt_stack.setCurrentWidget(self.prompt_edit)
        self.prompt_edit.setPlainText(prompt)
        self.sampling_panel.set_settings(settings)
        if self.step_mode_action.isChecked() != step_mode:
            self.step_mode_action.setChecked(step_mode)
        self._experiment_view = ((v.stage, v.select_step) if v else (exp.stage, exp.select_step))
        self._experiment_view_trace = None
        if run:
            self._experiment_run()

    def _experiment_run(self) -> None:
        """Generate (the first step in step mode); while a model loads, once it has loaded."""
        if self.controller.state == State.LOADING:
            self._experiment_run_on_load = True
        else:
            self.generate()

    def _experiment_on_model_loaded(self, _info) -> None:
        if self._experiment_run_on_load:
            self._experiment_run_on_load = False
            if self.experiment is not None:
                QTimer.singleShot(0, self.generate)

    def run_experiment_again(self) -> None:
        """Run again: the prompt and knobs as they are now, a new seed when the experiment asks
        for one, and the experiment's view once the run is shown."""
        exp = self.experiment
        if exp is None:
            return
        v = exp.variants[self.experiment_variant] if self.experiment_variant is not None else None

        def go() -> None:
            if self.experiment is not exp:
                return
            if exp.fresh_seed:
                self.sampling_panel.set_settings(self.sampling_panel.settings().replace(
                    seed=random.randrange(1, 2**31 - 1)))
            self._experiment_view = ((v.stage, v.select_step) if v else (exp.stage, exp.select_step))
            self._experiment_view_trace = None
            self._experiment_run()

        self._experiment_when_idle(go)

    def close_experiment(self) -> None:
        """The card goes; the prompt and the knobs stay as the experiment left them."""
        self.experiment = self.experiment_variant = None
        self._experiment_view = self._experiment_view_trace = None
        self._experiment_then = None
        self._experiment_run_on_load = False
        self._experiment_timer.stop()
        self.experiment_card.setVisible(False)

    def _experiment_card_visibility(self) -> None:
        self.experiment_card.setVisible(self.experiment is not None and self.lab_tabs.currentIndex() == 0)

    # ------------------------------------------------------------------ a run in the way
    def _experiment_when_idle(self, fn) -> None:
        """``fn`` now, or once the Workbench's run in progress has stopped (Stop keeps its
        output); an open step-mode run is ended (kept in the History) so a new one starts."""
        c = self.controller
        if c.state != State.LOADING and (c.busy or c.in_step_mode_run):
            c.stop()
            if c.busy:
                self._experiment_then = fn
                return
        self._experiment_then = None
        fn()

    def _experiment_on_state(self, state) -> None:
        self.experiment_card.set_busy(state in (State.GENERATING, State.LOADING))
        if self._experiment_then is not None and not self.controller.busy:
            fn, self._experiment_then = self._experiment_then, None
            QTimer.singleShot(0, fn)  # after the controller has finished its own bookkeeping

    # ------------------------------------------------------------------ the view it asks for
    @property
    def experiment_view_pending(self) -> bool:
        """Whether the view the experiment asks for (its stage, its step) still waits for its run."""
        return self._experiment_view is not None

    def _experiment_on_trace_reset(self, trace) -> None:
        if self._experiment_view is None:
            return
        if self._experiment_view_trace is None:  # the experiment's run has started
            self._experiment_view_trace = trace
            self._experiment_timer.start()
        elif self._experiment_view_trace is not trace:  # another run replaced it
            self._experiment_view = self._experiment_view_trace = None
            self._experiment_timer.stop()

    def _experiment_apply_view(self) -> None:
        """Each tick while a view is waiting: the stage once the chart shows a step of the run
        that has it, the selected step once the run has finished and every step is on screen;
        whatever is still waiting when the finished run is all shown is dropped."""
        view, trace = self._experiment_view, self._experiment_view_trace
        if view is None or trace is None or self.controller.trace is not trace:
            self._experiment_view = self._experiment_view_trace = None
            self._experiment_timer.stop()
            return
        stage, select = view
        plot = self.distribution_plot
        finished = trace.finished is not None and self.controller.state != State.GENERATING
        all_shown = self.shown_steps() >= len(trace.steps)
        if select is not None and finished and trace.steps and all_shown:
            self.select_step(min(select, len(trace.steps) - 1))
            select = None
        # the stage after the step: selecting it may be what first puts a step on the chart
        # (which happens when the run ends before the chart drew one of its steps)
        if stage and plot.step() is not None and stage in plot.stage_names():
            if plot.stage() != stage:
                plot.set_stage(stage)
            stage = ""
        if finished and all_shown and (plot.step() is not None or not trace.steps):
            stage, select = "", None  # nothing more will come: what is not there is not shown
        self._experiment_view = (stage, select) if stage or select is not None else None
        if self._experiment_view is None:
            self._experiment_view_trace = None
            self._experiment_timer.stop()

    # ------------------------------------------------------------------ the first-run hint
    def offer_first_run_hint(self) -> bool:
        """Show the first-run hint unless it was dismissed before; True when shown."""
        if not self.app_settings.show_first_run_hint:
            return False
        self.first_run_hint.show_hint(FIRST_RUN_HINT)
        return True

    def _first_run_hint_dismissed(self) -> None:
        self.app_settings.show_first_run_hint = False
        try:
            self.app_settings.save()  # at once: a crash later must not bring the hint back
        except OSError as exc:
            log.warning("settings not saved: %s", exc)
