"""The main window: the shell and the Workbench tab, wired to the controller.

Owns: ``MainWindow`` (the layout, menus and shortcuts, the lab tabs made from
``app.lab_registry``, the Workbench's generation and step mode, the 30 Hz redraw timer and its
pacer, selection between token view, bar chart and entropy timeline, state and failures, the
error banner, view options, drag-and-drop, closing). Its other parts are mixins beside it:
``app.window_model`` (model and server), ``app.window_labs`` (lab runs and generations),
``app.window_exports`` (exports), ``app.window_guess`` (the guess game), ``app.window_lens`` (the layer lens), ``app.window_whatif`` (what-if, re-score, prompt X-ray),
``app.window_presentation`` (presentation mode and its pace), ``app.window_experiments`` (ready-made
experiments, the first-run hint). About
660 lines: building the widgets and menus is long but
one job, kept with the slots it connects. Runs on the GUI thread. It never touches the model: it
asks the ``WorkbenchController``.
"""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTabWidget,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app.controller import WorkbenchController
from app.core.settings import AppSettings
from app.workbench_control import ConnectionFailure, ModelLoadFailure, State, UnexpectedFailure, WorkbenchFailure
from app.lab_registry import LABS
from app.lab_tabs import LabTabs
from app.redraw_pacer import RedrawPacer
from app.window_experiments import ExperimentsMixin
from app.window_exports import ExportsMixin
from app.window_labs import LabsMixin
from app.window_model import ModelMixin
from app.window_presentation import PresentationMixin
from app.window_guess import GuessMixin
from app.window_lens import LensMixin
from app.window_whatif import WhatIfMixin
from backends.base import Finished, SamplerSettings, Step
from widgets.chat_editor import ChatEditor
from widgets.connection_panel import ConnectionPanel
from widgets.distribution_plot import DistributionPlot
from widgets.entropy_plot import EntropyPlot
from widgets.history_panel import HistoryPanel
from widgets.message_banner import MessageBanner
from widgets.model_panel import ModelPanel
from widgets.palettes import PALETTE_TIPS, PALETTES
from widgets.sampling_panel import SamplingPanel
from widgets.steady_label import SteadyLabel
from widgets.token_view import TokenView

log = logging.getLogger(__name__)

__all__ = ["MainWindow", "DEFAULT_PROMPT", "REDRAW_MS", "PLOT_STREAM_MS", "TEXT_STREAM_MS"]

_XRAY_TIP = ("Show the prompt's own tokens like generated ones: each token's probability given what precedes it, "
             "its rank and alternatives on hover, the surprisal curve, and the prompt's perplexity (from a server: "
             "its echoed top-N, so entropies are lower bounds)")

DEFAULT_PROMPT = "The most surprising thing about octopuses is"
REDRAW_MS = 33  # the redraw timer: at most ~30 redraws per second, whatever the token rate
PLOT_STREAM_MS = 200  # while tokens stream, the plots redraw at most 5 times per second
TEXT_STREAM_MS = 66  # and the token view and status bar at most 15 times (see app.redraw_pacer)


def _window_settings() -> QSettings:
    """Window geometry lives in an INI file beside settings.json (so tests can redirect it)."""
    from app.core.paths import config_dir

    return QSettings(str(config_dir() / "window.ini"), QSettings.IniFormat)


class MainWindow(ModelMixin, LabsMixin, ExportsMixin, WhatIfMixin, PresentationMixin, GuessMixin, LensMixin, ExperimentsMixin, QMainWindow):
    def __init__(self, controller: WorkbenchController, settings: AppSettings, *, autoload: bool = True) -> None:
        super().__init__()
        self.controller = controller
        self.app_settings = settings
        self.setWindowTitle("Samplescope")
        self.setAcceptDrops(True)
        self._dirty = False
        self._plots_dirty = False
        self._pacer = RedrawPacer({"text": (TEXT_STREAM_MS / 1000, 0.5), "plots": (PLOT_STREAM_MS / 1000, 2.0)})
        self._gen_t0: float | None = None
        self._gen_n0 = 0
        self._selected: int | None = None  # None: follow the latest step
        self.last_what_if_ms: float | None = None  # how long the last what-if took
        self.last_rescore = None  # the last "Apply to this run" (app.core.whatif.Rescored)
        self._pending: Step | None = None
        self._build_widgets()
        self._build_menus()
        self._connect()
        self._restore()
        self.redraw_timer = QTimer(self)
        self.redraw_timer.setInterval(REDRAW_MS)
        self.redraw_timer.timeout.connect(self._redraw)
        self.redraw_timer.start()
        self.redraw_count = 0
        self._refresh_history()
        self._on_state(controller.state)
        if settings.warning:
            self.show_banner(settings.warning, sticky=True)
        if autoload:
            QTimer.singleShot(0, lambda: self._load(self.model_panel.selected_path()))

    # ------------------------------------------------------------------ layout
    def _build_widgets(self) -> None:
        self.model_panel = ModelPanel()
        self.sampling_panel = SamplingPanel()
        self.sampling_panel.settingsChanged.connect(self._what_if)
        self.history_panel = HistoryPanel()
        self.connection_panel = ConnectionPanel()
        for title, w, name in (
            ("Model", self.model_panel, "model"),
            ("Sampling", self.sampling_panel, "sampling"),
            ("Server", self.connection_panel, "server"),
            ("History", self.history_panel, "history"),
        ):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock_{name}")
            dock.setWidget(w)
            self.addDockWidget(Qt.LeftDockWidgetArea, dock)
            setattr(self, f"{name}_dock", dock)
        self.tabifyDockWidget(self.model_dock, self.sampling_dock)
        self.tabifyDockWidget(self.sampling_dock, self.server_dock)
        self.sampling_dock.raise_()

        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(4, 4, 4, 4)
        self.banner = MessageBanner()
        outer.addWidget(self.banner)

        split = QSplitter(Qt.Vertical)
        prompt_box = QWidget()
        pl = QVBoxLayout(prompt_box)
        pl.setContentsMargins(0, 0, 0, 0)
        self.prompt_edit = QPlainTextEdit()
        self.prompt_edit.setPlaceholderText("Type a prompt; the model continues it. Ctrl+Enter generates.")
        self.prompt_edit.setPlainText(DEFAULT_PROMPT)
        self.chat_editor = ChatEditor()
        self.prompt_stack = QStackedWidget()
        self.prompt_stack.addWidget(self.prompt_edit)
        self.prompt_stack.addWidget(self.chat_editor)
        pl.addWidget(self.prompt_stack)
        row = QHBoxLayout()
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate to the end (Ctrl+Enter)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop between two tokens; the partial output is kept (Esc)")
        self.step_button = QPushButton("Step")
        self.step_button.setToolTip(
            "Step mode: take one token (F10). The chart then shows the next distribution: "
            "click a bar to choose that token instead of sampling."
        )
        self.step_mode_button = QPushButton("Step mode")
        self.step_mode_button.setCheckable(True)
        self.step_mode_button.setToolTip("Advance one token at a time, for demos (Ctrl+T)")
        self.rescore_button = QPushButton("Apply to this run")
        self.rescore_button.setToolTip(
            "Re-score the shown run with the knobs as set now (Ctrl+Shift+A): same tokens, every step "
            "recomputed; the timeline overlays the new final entropy and marks tokens the new settings cut")
        for b in (self.generate_button, self.stop_button, self.step_mode_button, self.step_button, self.rescore_button):
            row.addWidget(b)
        row.addStretch(1)
        pl.addLayout(row)
        split.addWidget(prompt_box)

        self.token_view = TokenView()
        split.addWidget(self.token_view)
        plots = QSplitter(Qt.Horizontal)
        self.distribution_plot = DistributionPlot()
        self.entropy_plot = EntropyPlot()
        plots.addWidget(self.distribution_plot)
        plots.addWidget(self.entropy_plot)
        split.addWidget(plots)
        split.setSizes([140, 260, 380])
        self.workbench_split, self.plots_split = split, plots  # presentation mode lays them out
        self.lab_tabs = QTabWidget()
        self.lab_tabs.setDocumentMode(True)
        self.lab_tabs.addTab(split, "Workbench")
        #: every registered lab's tab (app.lab_registry), in tab order, built when first needed:
        #: ``lab_panels`` / ``lab_presenters`` map a lab's name to its panel / presenter, also the
        #: attributes ``<name>_panel`` / ``<name>_lab`` (see __getattr__)
        self.lab_tab_set = LabTabs(self.lab_tabs, LABS,
                                   lambda spec, panel: spec.make_presenter(panel, self.controller, self.settings),
                                   self._on_lab_built)
        self.lab_panels = self.lab_tab_set.panels
        self.lab_presenters = self.lab_tab_set.presenters
        outer.addWidget(self.lab_tabs, 1)
        self.setCentralWidget(central)

        self.state_label = QLabel("No model")
        self.speed_label = SteadyLabel()  # these two change with every redraw while streaming
        self.steps_label = SteadyLabel()
        self.state_label.setTextFormat(Qt.PlainText)
        self.statusBar().addWidget(self.state_label, 1)
        self.status_progress = QProgressBar()
        self.status_progress.setMaximumWidth(260)
        self.status_progress.setVisible(False)
        self.statusBar().addPermanentWidget(self.status_progress)
        self.statusBar().addPermanentWidget(self.steps_label)
        self.statusBar().addPermanentWidget(self.speed_label)

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "", checkable: bool = False) -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
            act.setToolTip(tip)
        act.setCheckable(checkable)
        if checkable:
            act.toggled.connect(slot)
        else:
            act.triggered.connect(slot)
        menu.addAction(act)
        self.addAction(act)
        return act

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self.open_action = self._action(f, "&Open model…", self.open_model_dialog, QKeySequence.Open,
                                        "Open a GGUF model file")
        self.models_on_disk_action = self._action(
            f, "Models on &disk…", lambda: self.model_panel.open_model_picker(), "Ctrl+Shift+O",
            "GGUF files already on this computer (Hugging Face cache, LM Studio, Ollama, llama.cpp's cache, "
            "folders you add), with what their headers say; choose one to load it")
        self.recent_menu = f.addMenu("Recent models")
        f.addSeparator()
        self._action(f, "Export run as &JSON…", lambda: self.export_run("json"), "Ctrl+Shift+J",
                     "The shown run as JSON: prompt, model name, sampler settings and every step with its "
                     "alternatives (no model path, no key)")
        self._action(f, "Export run as &CSV…", lambda: self.export_run("csv"), "Ctrl+Shift+C",
                     "The shown run as CSV, one row per generated token with its likeliest alternatives")
        self._action(f, "Export &distribution plot (PNG/SVG)…", lambda: self.export_plot(self.distribution_plot),
                     tip="The next-token distribution chart as a PNG image or an SVG vector file")
        self._action(f, "Export &entropy plot (PNG/SVG)…", lambda: self.export_plot(self.entropy_plot),
                     tip="The entropy timeline as a PNG image or an SVG vector file")
        self._action(f, "Export lab results as JSON…", lambda: self.export_lab_results(),
                     tip="The open lab tab's knobs, every record and the summary")
        self._action(f, "Export lab table as CSV…", lambda: self.export_lab_table(),
                     tip="The open lab tab's results, one row per run, concept or step")
        self._action(f, "Export lab plot (PNG/SVG)…", lambda: self.export_lab_plot(),
                     tip="The plot shown in the open lab tab")
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.Quit, "Close Samplescope")

        r = mb.addMenu("&Run")
        self.generate_action = self._action(r, "&Generate", self.generate, "Ctrl+Return",
                                            "Generate from the prompt (Ctrl+Enter)")
        self.generate_action.setShortcuts([QKeySequence("Ctrl+Return"), QKeySequence("Ctrl+Enter")])
        self.stop_action = self._action(r, "&Stop", self.stop, "Esc", "Stop and keep the partial output")
        r.addSeparator()
        self.step_mode_action = self._action(r, "Step &mode", self.set_step_mode, "Ctrl+T",
                                             "Advance one token at a time; click a bar of the chart to choose "
                                             "the next token instead of sampling", checkable=True)
        self.step_action = self._action(r, "Step one &token", lambda: self.step(), "F10",
                                        "Take one token in step mode (turns step mode on)")
        self.xray_action = self._action(
            r, "&X-ray the prompt", self.xray_prompt, "Ctrl+Shift+X", _XRAY_TIP)
        self.rescore_action = self._action(
            r, "&Apply knobs to this run", self.rescore_run, "Ctrl+Shift+A",
            "Re-score the shown run with the sampler knobs as set now: the same tokens, every step recomputed; "
            "the timeline overlays the new final entropy and the chosen tokens' new probabilities and marks "
            "each step whose token the new settings would have cut")
        self._build_guess(r)  # Run > Guess the next token (app.window_guess)
        self._build_lens(r)  # Run > Layer lens of this step / of the whole run (app.window_lens)
        r.addSeparator()
        self.vs_once_action = self._action(r, "VS lab: run &once", self._vs_run_once, "Ctrl+Shift+R",
                                           "Verbalized Sampling: one answer and its stated distribution")
        self.vs_compare_action = self._action(r, "VS lab: &compare with Direct", self._vs_compare,
                                              "Ctrl+Shift+Return", "Verbalized Sampling: Direct vs the method, N runs")

        self._build_experiments(mb)  # the Experiments menu, its card and the first-run hint (app.window_experiments)
        v = mb.addMenu("&View")
        pal = v.addMenu("Token colours")
        group = QActionGroup(self)
        self.palette_actions = {}
        for name in PALETTES:
            act = QAction(name, self, checkable=True)
            act.setStatusTip(PALETTE_TIPS[name])
            act.triggered.connect(lambda _=False, n=name: self.set_palette(n))
            group.addAction(act)
            pal.addAction(act)
            self.palette_actions[name] = act
        self.color_raw_action = self._action(v, "Colour tokens by raw probability", self._set_color_by,
                                             tip="Colour each token by the model's own probability of it, before "
                                                 "the sampler chain (off: after the chain)", checkable=True)
        self.whitespace_action = self._action(v, "Show &whitespace and newlines", self._set_whitespace,
                                              "Ctrl+Shift+W", "Show spaces as ·, line breaks as ↵ and tabs as → "
                                              "in the token view", checkable=True)
        self._build_presentation(v)  # View > Presentation (F11) and its pace bar
        self.centralWidget().layout().insertWidget(1, self.pace_bar)
        v.addSeparator()
        for dock in (self.model_dock, self.sampling_dock, self.server_dock, self.history_dock):
            toggle = dock.toggleViewAction()
            toggle.setStatusTip(f"Show or hide the {dock.windowTitle()} panel")
            v.addAction(toggle)
        h = mb.addMenu("&Help")
        self._action(h, "&Shortcuts", self._show_shortcuts, tip="List the keyboard shortcuts")

    def _connect(self) -> None:
        c = self.controller
        c.stateChanged.connect(self._on_state)
        c.modelLoaded.connect(self._on_model_loaded)
        c.loadProgress.connect(self.model_panel.show_progress)
        c.loadProgress.connect(self._show_load_progress)
        c.traceReset.connect(self._on_trace_reset)
        c.traceOpened.connect(self._on_trace_opened)
        c.stepsAdded.connect(self._mark_dirty)
        c.pendingChanged.connect(self._on_pending)
        c.generationFinished.connect(self._on_finished)
        c.failed.connect(self._on_failure)
        c.runSaved.connect(lambda _id: self._refresh_history())
        self.model_panel.loadRequested.connect(
            lambda path, n_ctx, n_gpu, n_thr: self._load(path, n_ctx=n_ctx, n_gpu=n_gpu, n_threads=n_thr)
        )
        self.model_panel.openRequested.connect(self.open_model_dialog)
        self.model_panel.parallel.valueChanged.connect(self._set_parallel)
        self.model_panel.whatif_memory.valueChanged.connect(
            lambda mb: self.controller.logit_memory.set_max_bytes(int(mb) << 20))
        self.generate_button.clicked.connect(self.generate)
        self.stop_button.clicked.connect(self.stop)
        self.step_button.clicked.connect(lambda: self.step())
        self.rescore_button.clicked.connect(self.rescore_run)
        self.controller.xrayDone.connect(self._on_xray)
        self.controller.logitsRecomputed.connect(self._on_logits_recomputed)
        self.step_mode_button.toggled.connect(self.step_mode_action.setChecked)
        self.token_view.stepClicked.connect(self.select_step)
        self.entropy_plot.stepClicked.connect(self.select_step)
        self.distribution_plot.tokenClicked.connect(self._on_bar_clicked)
        cp = self.connection_panel
        cp.testRequested.connect(self._test_remote)
        cp.connectRequested.connect(self._connect_remote)
        cp.disconnectRequested.connect(self.controller.disconnect_remote)
        cp.keyringSaveRequested.connect(self._save_key)
        c.remoteTested.connect(self._on_remote_tested)
        c.remoteConnected.connect(self._on_remote_connected)
        c.waitCountdown.connect(self._on_wait)
        self.history_panel.openRequested.connect(self.open_run)
        self.history_panel.deleteRequested.connect(self._delete_run)
        self.history_panel.openLabRequested.connect(self.open_lab_run)
        self.history_panel.deleteLabRequested.connect(self._delete_lab_run)
        c.labs.failed.connect(self._on_failure)
        c.labs.finished.connect(lambda *_: self._refresh_history())
        c.labs.busyChanged.connect(lambda _busy: self._on_state(c.state))

    def _restore(self) -> None:
        s = self.app_settings
        try:
            self.sampling_panel.set_settings(s.sampler_settings, s.preset_name or None)
        except Exception:  # a settings file from another version: keep the defaults
            pass
        self.model_panel.n_ctx.setValue(s.n_ctx)
        self.model_panel.n_threads.setValue(s.n_threads)
        self.model_panel.n_gpu.setValue(s.n_gpu_layers)
        self.model_panel.parallel.setValue(s.max_parallel)
        self.model_panel.whatif_memory.setValue(s.whatif_memory_mb)
        self.controller.logit_memory.set_max_bytes(s.whatif_memory_mb << 20)
        self._set_parallel(s.max_parallel)
        self._update_recent()
        palette = s.palette if s.palette in PALETTES else next(iter(PALETTES))
        self.set_palette(palette)
        self.whitespace_action.setChecked(s.show_whitespace)
        if s.remote:
            from backends.sources import RemoteConfig

            try:
                self.connection_panel.set_config(RemoteConfig.from_dict(s.remote))
            except TypeError:
                pass
        qs = _window_settings()
        geo = qs.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        else:
            self.resize(1500, 950)
        state = qs.value("windowState")
        if state is not None:
            self.restoreState(state)

    # ------------------------------------------------------------------ generation
    def prompt(self) -> str:
        return self.prompt_edit.toPlainText()

    def settings(self) -> SamplerSettings:
        return self.sampling_panel.settings()

    def generate(self) -> None:
        if self.step_mode_action.isChecked():
            self.step()
            return
        self.hide_banner()
        if self.prompt_stack.currentWidget() is self.chat_editor:
            messages = self.chat_editor.messages()
            self.controller.generate(self.chat_editor.as_text(), self.settings(), messages=messages)
        else:
            self.controller.generate(self.prompt(), self.settings())

    def stop(self) -> None:
        """Esc: stop the lab run when its tab is showing, else the generation."""
        current = self.lab_tabs.currentWidget()
        for panel, lab in self.lab_tab_set.built().values():
            if current is panel and lab.running:
                lab.stop()
                return
        self.controller.stop()

    def set_step_mode(self, on: bool) -> None:
        self.step_mode_button.blockSignals(True)
        self.step_mode_button.setChecked(on)
        self.step_mode_button.blockSignals(False)
        self.distribution_plot.set_pick_mode(on)
        if not on and self.controller.in_step_mode_run:
            self.controller.finish_step_run()
        self._on_state(self.controller.state)

    def step(self, token_id: int | None = None) -> None:
        if not self.step_mode_action.isChecked():
            self.step_mode_action.setChecked(True)
        self.hide_banner()
        self.controller.step(self.prompt(), self.settings(), token_id)

    def _on_bar_clicked(self, token_id: int) -> None:
        if self.step_mode_action.isChecked() and self._pending is not None and not self.guess_hides_pending():
            self.step(token_id)

    def _on_trace_reset(self, trace) -> None:
        self._selected = None
        self._pending = None
        self.token_view.set_trace(trace)  # shows trace.prompt before the output
        self.entropy_plot.set_trace(trace)
        self.distribution_plot.show_step(None)
        self._mark_dirty()

    def _on_trace_opened(self, trace) -> None:
        """A stored run or a lab generation is shown: the knobs and the prompt become the ones
        that made it ("values actually used" says them; Generate makes it again). A chat
        conversation in the editor is left as it is."""
        self.sampling_panel.set_settings(trace.settings)
        if self.prompt_stack.currentWidget() is self.prompt_edit and trace.prompt:
            self.prompt_edit.setPlainText(trace.prompt)

    def _on_pending(self, step: Step | None) -> None:
        self._pending = step
        if step is not None:
            self._selected = None
        self._mark_dirty()

    def _on_finished(self, fin: Finished) -> None:
        self._mark_dirty()
        words = {
            "eos": "end of text",
            "stop": "stop string",
            "length": "max tokens",
            "cancelled": "stopped",
            "context": "context full",
            "error": "error",
            "incomplete": "incomplete (the stream was cut; what arrived is kept)",
        }.get(fin.reason, fin.reason)
        self.speed_label.setText(f"{fin.tokens_per_s:.1f} tokens/s")
        self.statusBar().showMessage(f"Finished: {fin.n_tokens} tokens, {words}.", 8000)
        if fin.reason in ("incomplete", "error") or (fin.message and fin.reason != "cancelled"):
            # e.g. a stream cut mid-way (the tokens received are kept) or a text-only server
            self.show_banner(f"Run {words}: {fin.message}" if fin.message else f"Run {words}.")

    def _mark_dirty(self) -> None:
        self._dirty = True

    def _redraw(self) -> None:
        """Called by the timer: draw what arrived since the last redraw.

        Idle, everything follows at up to ~30 Hz. While tokens stream the window draws on a
        budget (``app.redraw_pacer``): the token view and the status bar at most every
        ``TEXT_STREAM_MS``, the plots (lines only; the entropy plot's symbols come back at the
        end) at most every ``PLOT_STREAM_MS``, both less often while the GUI thread uses more
        than its share of a core, which on a 2-core machine is taken from llama.cpp's threads.
        When the run ends or the user selects a step they redraw at once.
        """
        pacer = self._pacer
        pacer.tick()
        self._pace_tick()  # presentation mode: let out the tokens its pace allows
        now = time.monotonic()
        streaming = self.controller.state == State.GENERATING
        if self._dirty and pacer.due("text", streaming):
            pacer.drawn("text")
            self._dirty = False
            self._plots_dirty = True
            trace = self.controller.trace
            self.token_view.refresh()
            n = len(trace) if trace is not None else 0
            self.steps_label.setText(f"{n} tokens")
            if trace is not None and trace.finished is None and streaming and n:
                if self._gen_t0 is None or n == 1:
                    self._gen_t0, self._gen_n0 = now, n
                elif now > self._gen_t0:
                    rate = (n - self._gen_n0) / (now - self._gen_t0)
                    self.speed_label.setText(f"{rate:.1f} tokens/s")
        if not self._plots_dirty or not pacer.due("plots", streaming):
            return
        pacer.drawn("plots")
        self._plots_dirty = False
        self.redraw_count += 1
        trace = self.controller.trace
        self.entropy_plot.refresh(live=streaming)
        if self._pending is not None and not self.guess_hides_pending():
            self.distribution_plot.show_step(self._pending, pending=True)
        elif trace is not None and trace.steps and self.shown_steps():
            shown = self.shown_steps()  # every step, unless presentation mode holds some back
            idx = self._selected if self._selected is not None else shown - 1
            idx = min(idx, shown - 1)
            self.distribution_plot.show_step(trace.steps[idx])
            self.token_view.select(idx)
            self.entropy_plot.select(idx)

    def select_step(self, index: int) -> None:
        trace = self.controller.trace
        if trace is None or not 0 <= index < len(trace.steps):
            return
        self._selected = None if index == len(trace.steps) - 1 and trace.finished is None else index
        self._pending = None if self._selected is not None else self._pending
        self.token_view.select(index)
        self.entropy_plot.select(index)
        self.distribution_plot.show_step(trace.steps[index])
        self._what_if(self.sampling_panel.settings())

    # ------------------------------------------------------------------ state & errors
    def _on_state(self, state: State) -> None:
        names = {
            State.NO_MODEL: "No model loaded",
            State.LOADING: "Loading model…",
            State.READY: "Ready",
            State.GENERATING: "Generating…",
            State.STEPPING: "Step mode: press Step (F10) or click a bar to choose the next token",
        }
        info = self.controller.model_info
        self.state_label.setText(names.get(state, state) + (f" — {info.name}" if info else ""))
        has_model = self.controller.model_info is not None
        generating = state == State.GENERATING
        loading = state == State.LOADING
        self.model_panel.set_busy(loading)
        if not loading:
            self.status_progress.setVisible(False)
        self.generate_button.setEnabled(has_model and not generating and not loading)
        self.generate_action.setEnabled(has_model and not generating and not loading)
        self.stop_button.setEnabled(generating or self.controller.in_step_mode_run)
        self.stop_action.setEnabled(generating or self.controller.in_step_mode_run or self.controller.labs.busy)
        caps = self.controller.capabilities
        can_step = caps.step_mode or caps.kind == "none"
        self.step_button.setEnabled(has_model and can_step and not generating and not loading)
        self.step_action.setEnabled(has_model and can_step and not generating and not loading)
        self.rescore_action.setEnabled(has_model and not generating and not loading)
        self.xray_action.setEnabled(has_model and not generating and not loading and caps.prompt_logprobs)
        xray_tip = (_XRAY_TIP if caps.prompt_logprobs or caps.kind == "none"
                    else f"The prompt X-ray {caps.why_not('prompt_logprobs')}")
        self.xray_action.setStatusTip(xray_tip)
        self.xray_action.setToolTip(xray_tip)
        self.rescore_button.setEnabled(has_model and not generating and not loading)
        self.step_mode_button.setEnabled(can_step)
        self.step_mode_action.setEnabled(can_step)
        self.step_button.setToolTip(
            "Step mode: take one token (F10). The chart then shows the next distribution: click a bar to choose "
            "that token instead of sampling." if can_step else f"Step mode {caps.why_not('step_mode')}")
        self.connection_panel.set_busy(loading or generating)
        self.open_action.setEnabled(not loading and not generating)
        self.sampling_panel.setEnabled(not generating)
        if state == State.GENERATING:
            self._gen_t0 = None

    def _on_failure(self, failure: WorkbenchFailure) -> None:
        """Every failure of the Workbench and the labs: the banner says it (a bug's traceback
        behind Details); the panel it concerns shows it too, chosen by the failure's type."""
        details = failure.details if isinstance(failure, UnexpectedFailure) else ""
        self.show_banner(f"{failure.title}: {failure.message}", details)
        if isinstance(failure, ConnectionFailure):
            self.connection_panel.show_status(failure.message, error=True)
        elif isinstance(failure, ModelLoadFailure):
            self.model_panel.show_error(failure.message)
            if self.controller.model_info is not None:
                self.model_panel.select_path(self.controller.model_info.path
                                             if self.app_settings.last_model_path else None)
        self.statusBar().showMessage(failure.title, 8000)

    def show_banner(self, text: str, details: str = "", *, sticky: bool = False) -> None:
        """Add a message to the banner (messages already shown stay); ``details`` (a technical
        report) goes behind its Details button; a ``sticky`` message (found at start-up) stays
        until dismissed."""
        self.banner.add(text, details, sticky=sticky)

    def hide_banner(self) -> None:
        """A new action starts: the messages of earlier ones go (start-up findings stay)."""
        self.banner.clear_transient()

    def banner_text(self) -> str:
        return self.banner.text()

    # ------------------------------------------------------------------ history
    def _refresh_history(self) -> None:
        store = self.controller.store
        if store is None:
            return
        try:
            self.history_panel.set_runs(store.list_runs())
            self.history_panel.set_lab_runs(store.list_experiments())
        except Exception as exc:  # noqa: BLE001
            self.show_banner(f"History unavailable: {exc}")

    def open_run(self, run_id: int) -> None:
        if self.controller.busy:
            return
        self.controller.open_run(run_id)

    def _delete_run(self, run_id: int) -> None:
        try:
            self.controller.store.delete_run(run_id)
        except Exception as exc:  # noqa: BLE001
            self.show_banner(f"Run not deleted: {exc}")
        self._refresh_history()

    # ------------------------------------------------------------------ view options
    def set_palette(self, name: str) -> None:
        self.token_view.set_palette(name)
        self.app_settings.palette = name
        act = self.palette_actions.get(name)
        if act is not None:
            act.setChecked(True)

    def _set_color_by(self, raw: bool) -> None:
        self.token_view.set_color_by("raw" if raw else "final")

    def _set_whitespace(self, on: bool) -> None:
        self.token_view.set_show_whitespace(on)
        self.app_settings.show_whitespace = on

    def _show_shortcuts(self) -> None:
        self.show_banner(
            "Shortcuts: Ctrl+Enter generate · Esc stop · Ctrl+T step mode · F10 step · "
            "Ctrl+L / Ctrl+Shift+L layer lens of the step / the run · Ctrl+O open model · Ctrl+Shift+J/C export run · Ctrl+Shift+W whitespace · F11 presentation · "
            "Ctrl+Shift+R VS run once · Ctrl+Shift+Enter VS compare"
        )

    # ------------------------------------------------------------------ drag and drop
    def dragEnterEvent(self, event) -> None:
        if self._dropped_path(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        path = self._dropped_path(event.mimeData())
        if path:
            event.acceptProposedAction()
            self.load_path(path)

    @staticmethod
    def _dropped_path(mime) -> str | None:
        if mime.hasUrls():
            for url in mime.urls():
                if url.isLocalFile() and url.toLocalFile().lower().endswith(".gguf"):
                    return url.toLocalFile()
        return None

    # ------------------------------------------------------------------ closing
    def closeEvent(self, event) -> None:
        self.set_presentation(False)  # the ordinary fonts, docks and layout are what is saved
        s = self.app_settings
        s.sampler_settings = self.settings()
        s.preset_name = self.sampling_panel.preset.currentText()
        s.n_ctx = self.model_panel.n_ctx.value()
        s.n_threads = self.model_panel.n_threads.value()
        s.n_gpu_layers = self.model_panel.n_gpu.value()
        s.max_parallel = self.model_panel.parallel.value()
        s.whatif_memory_mb = self.model_panel.whatif_memory.value()
        s.remote = self.connection_panel.config().to_dict()
        try:
            s.save()
        except OSError as exc:
            log.warning("settings not saved: %s", exc)
        qs = _window_settings()
        qs.setValue("geometry", self.saveGeometry())
        qs.setValue("windowState", self.saveState())
        self.redraw_timer.stop()
        self.controller.shutdown()
        super().closeEvent(event)
