"""The layer lens in the window: a step's layers, a whole run's, and the commitment strip.

Owns ``LensMixin``, a part of ``MainWindow``: Run > Layer lens of this step (Ctrl+L) shows the
selected step's lens (the latest step when none is selected) in the "Layer lens" dock (its "This
step" tab: ``widgets.layer_lens.StepLensView``); Run > Layer lens of the whole run (Ctrl+Shift+L)
computes every step's lens in the background with a progress bar and Stop (its "Whole run" tab:
``RunLensView``, a layers x steps heatmap; a click on a cell opens that step's lens) and fills
the commitment strip under the token view (``CommitmentStrip``; a click opens that step's lens
too). Any run shown in the Workbench works (a generation, step mode, a run from the History, a
lab generation opened there) while the model that made it is loaded; a server is refused with
the reason. The lenses come from ``app.lens_jobs.LensJobs`` (the model worker); lenses already
computed for the shown run are kept (a second look at a step is instant) until another run is
shown. The palette follows the token view's. GUI thread.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QDockWidget, QTabWidget, QVBoxLayout, QWidget

from app.lens_jobs import LensJobs
from widgets.layer_lens import CommitmentStrip, RunLensView, StepLensView

__all__ = ["LensMixin"]

_STEP_TIP = ("Each layer's prediction for the selected step: the layer's output projected through the model's own "
             "final norm and unembedding (the logit lens), its top tokens, the chosen token's probability and rank, "
             "and the layer from which the model commits to it")
_RUN_TIP = ("The lens of every step of the shown run, in the background: a layers x steps heatmap and the commitment "
            "layer of every token under the token view")


class LensMixin:
    """The layer lens part of ``MainWindow`` (see the module docstring)."""

    lens_jobs: LensJobs

    def _build_lens(self, run_menu) -> None:
        """The two menu actions, the dock (hidden until used), the strip under the token view."""
        self.lens_jobs = LensJobs(self.controller, parent=self)
        self._lens_trace = None  # the trace the kept lenses are of
        self._lens_cache: dict[int, object] = {}  # step index -> StepLens of the shown run
        self._lens_wanted: int | None = None  # the step whose lens the step tab waits for
        self.step_lens_view = StepLensView()
        self.run_lens_view = RunLensView()
        self.lens_tabs = QTabWidget()
        self.lens_tabs.addTab(self.step_lens_view, "This step")
        self.lens_tabs.addTab(self.run_lens_view, "Whole run")
        self.lens_dock = QDockWidget("Layer lens", self)
        self.lens_dock.setObjectName("dock_layer_lens")
        self.lens_dock.setWidget(self.lens_tabs)
        self.addDockWidget(Qt.RightDockWidgetArea, self.lens_dock)
        self.lens_dock.hide()
        self._lens_asked = False  # shown by a lens action (not brought back by the saved layout)
        self.lens_dock.visibilityChanged.connect(self._lens_dock_shown)
        # the strip sits under the token view, in the same cell of the Workbench's splitter
        self.commitment_strip = CommitmentStrip()
        self.commitment_strip.setVisible(False)
        split = self.workbench_split
        index, sizes = split.indexOf(self.token_view), split.sizes()
        cell = QWidget()
        box = QVBoxLayout(cell)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(2)
        split.insertWidget(index, cell)
        box.addWidget(self.token_view, 1)  # taken out of the splitter: the cell holds it now
        box.addWidget(self.commitment_strip)
        split.setSizes(sizes)
        self.lens_step_action = self._action(run_menu, "Layer &lens of this step", lambda: self.lens_step(), "Ctrl+L",
                                            _STEP_TIP)
        self.lens_run_action = self._action(run_menu, "Layer lens of the &whole run", lambda: self.lens_run(), "Ctrl+Shift+L",
                                            _RUN_TIP)
        j = self.lens_jobs
        j.lensReady.connect(self._lens_ready)
        j.checked.connect(self._lens_checked)
        j.note.connect(self._lens_note)
        j.ended.connect(self._lens_ended)
        self.run_lens_view.stepClicked.connect(self._lens_open_step)
        self.run_lens_view.stopRequested.connect(self.lens_jobs.stop)
        self.commitment_strip.stepClicked.connect(self._lens_open_step)
        self.token_view.stepClicked.connect(self._lens_follow)
        self.entropy_plot.stepClicked.connect(self._lens_follow)
        self.stop_action.triggered.connect(self.lens_jobs.stop)  # Esc stops a lens as well
        c = self.controller
        c.traceReset.connect(self._lens_forget)
        c.stateChanged.connect(self._lens_on_state)
        self._lens_on_state(c.state)

    # ------------------------------------------------------------ actions
    def lens_step(self, index: int | None = None):
        """The lens of step ``index`` (default: the selected step, else the latest), shown in the
        dock's "This step" tab; computed on the model worker unless already kept. Returns the job
        (None when shown from what is kept, or refused: the banner says why)."""
        trace = self.controller.trace
        if index is None:
            index = self._selected if self._selected is not None else (len(trace.steps) - 1 if trace is not None
                                                                     and trace.steps else None)
        self._lens_show_dock()
        self.lens_tabs.setCurrentWidget(self.step_lens_view)
        if trace is not None and trace is self._lens_trace and index in self._lens_cache:
            self.step_lens_view.show_lens(self._lens_cache[index])
            return None
        if index is None or self.lens_jobs.why_not():
            self.step_lens_view.clear()
            self.step_lens_view.show_message("No layer lens", self.lens_jobs.why_not() or "Choose a step first.")
            self.lens_jobs.start([0] if index is None else [index])  # says why in the banner
            return None
        if self.lens_jobs.kind == "run":  # the run's lens is on its way: this step comes with it
            self._lens_wanted = index
            self.step_lens_view.show_message(f"Step {index}: waiting for the run's lens…")
            return None
        self._lens_prepare(trace)
        self._lens_wanted = index
        self.step_lens_view.clear()
        self.step_lens_view.show_message(f"Computing the lens of step {index}…",
                                         "The run is evaluated again up to this step with every layer read.")
        return self.lens_jobs.start([index], top_n=self._lens_top())

    def lens_run(self):
        """The lens of every step of the shown run in the background (dock's "Whole run" tab and
        the commitment strip). Returns the job (None when refused: the banner says why)."""
        trace = self.controller.trace
        self._lens_show_dock()
        self.lens_tabs.setCurrentWidget(self.run_lens_view)
        why = self.lens_jobs.why_not()
        if why:
            self.run_lens_view.finish(why)
            self.lens_jobs.start(None)  # says why in the banner
            return None
        self._lens_prepare(trace)
        n_layers = self.controller.model_info.n_layers if self.controller.model_info else 0
        self.run_lens_view.start(len(trace.steps), n_layers)
        for lens in self._lens_cache.values():
            self.run_lens_view.add(lens)
        self._lens_show_strip()
        return self.lens_jobs.start(None, top_n=self._lens_top())

    def lens_stop(self) -> None:
        self.lens_jobs.stop()

    def _lens_show_dock(self) -> None:
        """Show the dock; the first time as a window of its own over the Workbench's right part
        (docked, its table and heatmaps would make the window wider than a 1600-pixel screen;
        drag it onto an edge to dock it)."""
        self.set_lens_palette(self.app_settings.palette)  # the token view's colours
        self._lens_asked = True
        if self.lens_dock.isVisible():
            return
        if not getattr(self, "_lens_placed", False):
            self._lens_placed = True
            self.lens_dock.setFloating(True)
            g = self.geometry()
            w, h = min(680, max(460, g.width() // 2)), max(480, g.height() - 120)
            self.lens_dock.setGeometry(g.right() - w - 10, g.top() + 60, w, h)
        self.lens_dock.show()
        self.lens_dock.raise_()

    def _lens_dock_shown(self, visible: bool) -> None:
        if not visible and not self.isMinimized():  # closed by its own button: a later action shows it again
            self._lens_asked = False
        elif visible and not self._lens_asked:  # the window's saved layout brought it back, with nothing in it
            QTimer.singleShot(0, lambda: self._lens_asked or self.lens_dock.hide())

    # ------------------------------------------------------------ results
    def _lens_top(self) -> int:
        return 5

    def _lens_prepare(self, trace) -> None:
        if trace is not self._lens_trace:
            self._lens_trace = trace
            self._lens_cache = {}

    def _lens_ready(self, trace, lens) -> None:
        if trace is not self._lens_trace:
            return
        self._lens_cache[lens.index] = lens
        if self.lens_jobs.kind == "run" or len(self._lens_cache) > 1:
            self.run_lens_view.add(lens)
            if len(self._lens_cache) % 8 == 1:  # redraw the heatmap and strip now and then, not per step
                self.run_lens_view.redraw()
                self._lens_show_strip()
        if self._lens_wanted == lens.index:
            self._lens_wanted = None
            self.step_lens_view.show_lens(lens)

    def _lens_checked(self, check) -> None:
        self.step_lens_view.note.setText(check.describe())
        self.statusBar().showMessage(f"Layer lens {check.describe()}", 10000)

    def _lens_note(self, text: str) -> None:
        self.statusBar().showMessage(text, 15000)
        self.step_lens_view.note.setText(text)

    def _lens_ended(self, trace, kind: str, done: int, cancelled: bool) -> None:
        if trace is not self._lens_trace:
            return
        if kind == "run":
            total = len(trace.steps)
            self.run_lens_view.finish(
                f"Lens of {done} of {total} steps{' (stopped)' if cancelled and done < total else ''}: click a cell "
                "or a cell of the strip under the text for that step's lens")
            self._lens_show_strip()
            if self._lens_wanted is not None and self._lens_wanted in self._lens_cache:
                self.step_lens_view.show_lens(self._lens_cache[self._lens_wanted])
            self._lens_wanted = None
        elif cancelled and self._lens_wanted is not None:
            self.step_lens_view.show_message(f"The lens of step {self._lens_wanted} was not computed.",
                                             "See the message above.")
            self._lens_wanted = None

    def _lens_show_strip(self) -> None:
        trace = self._lens_trace
        if trace is None:
            return
        commit = [self._lens_cache[i].commitment_layer if i in self._lens_cache else -1
                  for i in range(len(trace.steps))]
        n_layers = self.controller.model_info.n_layers if self.controller.model_info else 1
        self.commitment_strip.set_commitments(commit, [s.piece for s in trace.steps], n_layers)
        self.commitment_strip.setVisible(bool(self._lens_cache))

    def _lens_follow(self, index: int) -> None:
        """Another step is selected: the strip and the run's heatmap mark it, and the step tab
        shows its lens when it is kept (otherwise Ctrl+L computes it)."""
        self.commitment_strip.select(index)
        self.run_lens_view.select(index)
        trace = self.controller.trace
        if self.lens_dock.isVisible() and trace is not None and trace is self._lens_trace and index in self._lens_cache:
            self.step_lens_view.show_lens(self._lens_cache[index])

    def _lens_open_step(self, index: int) -> None:
        """A cell of the run's heatmap or of the strip: select that step and show its lens."""
        self.select_step(index)
        self.commitment_strip.select(index)
        self.run_lens_view.select(index)
        self.lens_step(index)

    def _lens_forget(self, trace) -> None:
        """Another run is shown: the kept lenses, the strip and the run view go."""
        self._lens_trace = None
        self._lens_cache = {}
        self._lens_wanted = None
        self.commitment_strip.setVisible(False)
        self.commitment_strip.set_commitments([], [], 1)
        self.run_lens_view.clear()
        self.step_lens_view.clear()
        self.step_lens_view.show_message("Choose a step (click a token) and Run > Layer lens of this step (Ctrl+L).")

    def _lens_on_state(self, _state) -> None:
        caps = self.controller.capabilities
        ok = caps.layer_lens or caps.kind == "none"
        tip_step = _STEP_TIP if ok else f"The layer lens {caps.why_not('layer_lens')}"
        for act, tip in ((self.lens_step_action, tip_step), (self.lens_run_action, _RUN_TIP if ok else tip_step)):
            act.setEnabled(bool(caps.layer_lens))
            act.setStatusTip(tip)
            act.setToolTip(tip)

    def set_lens_palette(self, name: str) -> None:
        for view in (self.step_lens_view, self.run_lens_view, self.commitment_strip):
            view.set_palette(name)
