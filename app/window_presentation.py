"""Presentation mode of the main window (View > Presentation, F11): a mixin of ``MainWindow``.

Owns: ``PresentationMixin`` — entering and leaving the mode, and the pace at which generated
tokens are shown while it is on. GUI thread only.

Entering it, for a projector (1280x720 and up):
- every font is ``AppSettings.presentation_scale`` times as large (the application's font, so
  menus, tooltips and the labs follow) and every pyqtgraph plot's ticks, axis labels, title and
  legend too (``PlainPlotItem.set_text_scale``; the distribution plot follows its widget's font);
- a high-contrast theme: black on white (``widgets.presentation_theme``), plot texts black, the
  token view on the "High contrast" palette;
- the side panels (docks) are hidden and the Workbench's splitters give the token view and the
  two plots the room (prompt 16%, tokens 30%, plots 54%; the plots side by side, half each), and
  the distribution plot shows the top ``PRESENTATION_BARS`` candidates (their labels stay apart),
  the entropy timeline's curves are thicker and its legend moves into its axis label;
- a pace bar above the tabs: generated tokens are held in a display queue on the GUI thread
  (``app.display_pace.DisplayPace``) and shown at the chosen pace, or one per click (the "Next
  token" button, a click on the text, Space or the Right arrow). The engine is never slowed:
  the trace, the History and the exports hold every token as it comes; Stop keeps everything
  (what was generated keeps coming out at the pace). A run opened from the History, a lab or
  the X-ray, and step mode, show at once.

Leaving it flushes the queue and restores exactly what was there before: the application's
font and palette, the plots' fonts, colours and margins, the token view's palette, the number of
bars, the timeline's style, the docks and toolbars (``saveState``), the window's size, the
splitters' sizes. Closing the window while presenting leaves the mode first, so the settings and
window state saved are the ordinary ones.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QActionGroup, QFont, QKeySequence, QPalette
from PySide6.QtWidgets import QApplication, QFrame, QHBoxLayout, QSplitter

import pyqtgraph as pg

from app.core.settings import PRESENTATION_SCALES
from app.display_pace import PACE_STEPS, DisplayPace
from widgets.pace_control import PaceControl
from widgets.palettes import HIGH_CONTRAST_PALETTE
from widgets.plain_plot import PlainPlotItem, scaled_font
from widgets.presentation_theme import PLOT_TEXT, high_contrast_palette

__all__ = ["PresentationMixin", "PROMPT_SHARE", "TOKENS_SHARE", "PLOTS_SHARE", "PRESENTATION_BARS"]

#: the text sizes View > Presentation text size offers
PRESENTATION_SCALE_CHOICES = (1.25, 1.5, 2.0, 2.5, 3.0)

#: the Workbench's vertical splitter in presentation mode: prompt, token view, plots
PROMPT_SHARE, TOKENS_SHARE, PLOTS_SHARE = 16, 30, 54
#: the candidates the distribution plot shows in presentation mode (the rest: "others"), so that
#: their labels stay apart in large type in the height a 720-line projector leaves
PRESENTATION_BARS = 6


class _OnResize(QObject):
    """Calls ``callback`` after each resize of the widget it filters."""

    def __init__(self, callback, parent: QObject) -> None:
        super().__init__(parent)
        self._callback = callback

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt name)
        if event.type() == QEvent.Type.Resize:
            QTimer.singleShot(0, self._callback)  # after the splitter has laid itself out
        return False


class PresentationMixin:
    """Presentation mode for ``MainWindow`` (which builds ``token_view``, ``entropy_plot``,
    ``distribution_plot``, ``workbench_split``, ``plots_split``, ``controller`` and
    ``app_settings`` before calling ``_build_presentation``)."""

    # ------------------------------------------------------------------ building
    def _build_presentation(self, view_menu) -> None:
        """The View menu's Presentation action (F11), the reveal action and the pace bar."""
        self._presenting: dict[str, Any] | None = None
        self.display_pace = DisplayPace(self.app_settings.presentation_pace)
        self.presentation_action = self._action(
            view_menu, "&Presentation", self.set_presentation, "F11",
            "For a projector: larger fonts and plot labels, high contrast, the token view and plots "
            "filling the window, and tokens shown at a chosen pace (F11 again leaves)", checkable=True)
        self.reveal_action = self._action(
            view_menu, "Show the &next token", self.reveal_next, None,
            "Presentation mode: show the next generated token (Space or Right arrow; or click the text)")
        self.reveal_action.setShortcuts([QKeySequence(Qt.Key.Key_Space), QKeySequence(Qt.Key.Key_Right)])
        self.reveal_action.setEnabled(False)
        sizes = view_menu.addMenu("Presentation &text size")
        sizes.setToolTip("How much larger every font and plot label is in presentation mode")
        group = QActionGroup(self)
        self.presentation_scale_actions: dict[float, Any] = {}
        for scale in PRESENTATION_SCALE_CHOICES:
            act = self._action(sizes, f"{scale:g}×", lambda _=False, x=scale: self.set_presentation_scale(x), None,
                               f"Presentation mode: fonts and plot labels {scale:g} times their usual size")
            act.setCheckable(True)  # after _action, which then connected triggered (a choice, not a toggle)
            group.addAction(act)
            self.presentation_scale_actions[scale] = act
        self._check_scale_action()

        self.pace_bar = QFrame()
        self.pace_bar.setObjectName("paceBar")
        row = QHBoxLayout(self.pace_bar)
        row.setContentsMargins(2, 2, 2, 2)
        self.pace_control = PaceControl(PACE_STEPS)
        self.pace_control.set_rate(self.app_settings.presentation_pace)
        row.addWidget(self.pace_control)
        self.pace_bar.setVisible(False)
        self.pace_control.rateChanged.connect(self._set_pace)
        self.pace_control.nextRequested.connect(self.reveal_next)
        self.token_view.backgroundClicked.connect(self._on_text_clicked)
        self.controller.traceReset.connect(self._pace_on_reset)
        self.controller.traceOpened.connect(lambda _trace: self._pace_flush())
        # while presenting, a new window size (the projector's) gets the projector layout again
        self._split_watcher = _OnResize(self._on_split_resized, self.workbench_split)
        self.workbench_split.installEventFilter(self._split_watcher)

    def set_presentation_scale(self, scale: float) -> None:
        """The presentation's text size (saved in the settings); applied at once while presenting."""
        lo, hi = PRESENTATION_SCALES
        self.app_settings.presentation_scale = min(hi, max(lo, float(scale)))
        self._check_scale_action()
        if self.presenting():  # leave and enter again: everything is restored, then scaled anew
            self._leave_presentation()
            self._enter_presentation()
            self._update_reveal_action()

    def _check_scale_action(self) -> None:
        for scale, act in self.presentation_scale_actions.items():
            act.setChecked(abs(scale - float(self.app_settings.presentation_scale)) < 1e-9)

    # ------------------------------------------------------------------ the mode
    def presenting(self) -> bool:
        return self._presenting is not None

    def set_presentation(self, on: bool) -> None:
        """Enter (True) or leave (False) presentation mode (the action's checked state follows)."""
        on = bool(on)
        if self.presentation_action.isChecked() != on:
            self.presentation_action.setChecked(on)  # -> toggled -> here again
            return
        if on == self.presenting():
            return
        if on:
            self._enter_presentation()
        else:
            self._leave_presentation()
        self._update_reveal_action()

    @staticmethod
    def _deliver_style_changes() -> None:
        """Qt posts a change of the application's font or palette to the widgets: deliver it now,
        so that sizes computed next (a layout, a restored window state) are in the new fonts."""
        for kind in (QEvent.Type.ApplicationFontChange, QEvent.Type.ApplicationPaletteChange):
            QCoreApplication.sendPostedEvents(None, kind)

    @staticmethod
    def _plot_items_of(root) -> list[PlainPlotItem]:
        items = []
        for widget in root.findChildren(pg.PlotWidget):
            item = widget.getPlotItem()
            if isinstance(item, PlainPlotItem):
                items.append(item)
        return items

    def _plot_items(self) -> list[PlainPlotItem]:
        return self._plot_items_of(self)

    def _style_new_lab(self, panel) -> None:
        """A lab tab built while presenting gets the presentation's plot labels (its fonts and
        colours follow the application's by themselves) and gives them back on leaving."""
        saved = self._presenting
        if saved is None:
            return
        for item in self._plot_items_of(panel):
            item.set_text_scale(float(self.app_settings.presentation_scale))
            item.set_text_color(PLOT_TEXT)
            saved["plot_items"].append(item)

    def _enter_presentation(self) -> None:
        app = QApplication.instance()
        scale = float(self.app_settings.presentation_scale)
        saved: dict[str, Any] = {
            "font": QFont(app.font()),
            "palette": QPalette(app.palette()),
            "token_palette": self.token_view.palette_name(),
            "window_state": self.saveState(),
            "size": self.size(),
            "split": self.workbench_split.sizes(),
            "plots": self.plots_split.sizes(),
            "plot_items": self._plot_items(),
            "max_bars": self.distribution_plot.max_bars(),
            "projector_style": self.entropy_plot.projector_style(),
        }
        self._presenting = saved
        # the plots first: a tick font left to the default is scaled from the font as it is now
        for item in saved["plot_items"]:
            item.set_text_scale(scale)
            item.set_text_color(PLOT_TEXT)
        app.setFont(scaled_font(saved["font"], scale))
        app.setPalette(high_contrast_palette())
        self._deliver_style_changes()
        self.set_palette(HIGH_CONTRAST_PALETTE)
        self.distribution_plot.set_max_bars(min(PRESENTATION_BARS, saved["max_bars"]))
        self.entropy_plot.set_projector_style(True)
        for dock in self._docks():
            dock.hide()
        self.pace_bar.setVisible(True)
        self._lay_out_for_projector()
        trace = self.controller.trace
        self.display_pace.start(len(trace) if trace is not None else 0)
        self._apply_pace()

    def _on_split_resized(self) -> None:
        if self.presenting():
            self._lay_out_for_projector()

    def _lay_out_for_projector(self) -> None:
        split: QSplitter = self.workbench_split
        total = max(sum(split.sizes()), 1)
        split.setSizes([total * PROMPT_SHARE // 100, total * TOKENS_SHARE // 100, total * PLOTS_SHARE // 100])
        plots: QSplitter = self.plots_split
        width = max(sum(plots.sizes()), 2)
        plots.setSizes([width // 2, width - width // 2])

    def _leave_presentation(self) -> None:
        saved = self._presenting
        assert saved is not None
        self._presenting = None
        self.display_pace.stop()
        self._apply_pace()
        self.pace_bar.setVisible(False)
        app = QApplication.instance()
        app.setPalette(saved["palette"])
        app.setFont(saved["font"])
        self._deliver_style_changes()
        for item in saved["plot_items"]:
            item.set_text_color(None)
            item.set_text_scale(1.0)
        self.set_palette(saved["token_palette"])
        self.distribution_plot.set_max_bars(saved["max_bars"])
        self.entropy_plot.set_projector_style(saved["projector_style"])
        if not self.windowState() & (Qt.WindowState.WindowMaximized | Qt.WindowState.WindowFullScreen):
            self.resize(saved["size"])  # first: the docks' sizes are restored into the window's
        self.restoreState(saved["window_state"])
        QCoreApplication.sendPostedEvents(None, QEvent.Type.LayoutRequest)  # lay out before the splitters
        self.workbench_split.setSizes(saved["split"])
        self.plots_split.setSizes(saved["plots"])
        self._mark_dirty()

    def _docks(self) -> list:
        return [self.model_dock, self.sampling_dock, self.server_dock, self.history_dock]

    # ------------------------------------------------------------------ the pace
    def shown_steps(self) -> int:
        """How many steps of the trace are on screen (all, unless presentation mode holds some)."""
        trace = self.controller.trace
        n = len(trace) if trace is not None else 0
        return min(n, self.display_pace.shown) if self.display_pace.active else n

    def _pace_tick(self) -> None:
        """On each redraw tick: let out what the pace allows (a step-mode run shows at once)."""
        pace = self.display_pace
        if not pace.active:
            return
        trace = self.controller.trace
        n = len(trace) if trace is not None else 0
        before = pace.shown
        if self.controller.in_step_mode_run:
            pace.advance(n)
            pace.flush()
        else:
            pace.advance(n)
        if pace.shown != before:
            self._apply_pace()
        self.pace_control.set_waiting(pace.held)
        self._update_reveal_action()

    def _apply_pace(self) -> None:
        """Show exactly the steps the pace has let out (every step when it is off)."""
        pace = self.display_pace
        limit = pace.shown if pace.active else None
        self.token_view.set_reveal_limit(limit)
        self.entropy_plot.set_reveal_limit(limit, live=self.controller.state == "generating")
        self.pace_control.set_waiting(pace.held if pace.active else 0)
        self._mark_dirty()

    def reveal_next(self) -> bool:
        """Show the next held token (the Next button, Space, Right arrow, a click on the text);
        False when none is held."""
        if not self.display_pace.active:
            return False
        trace = self.controller.trace
        self.display_pace.advance(len(trace) if trace is not None else 0)
        if not self.display_pace.click():
            return False
        self._selected = None  # the plots follow the token just shown
        self._apply_pace()
        self._update_reveal_action()
        return True

    def _on_text_clicked(self) -> None:
        if self.display_pace.per_click:
            self.reveal_next()

    def _set_pace(self, rate: float) -> None:
        self.display_pace.set_rate(rate)
        self.app_settings.presentation_pace = float(rate)
        self._update_reveal_action()

    def _pace_on_reset(self, _trace) -> None:
        """A new trace: nothing of it is shown yet (an opened one is flushed by traceOpened)."""
        if self.display_pace.active:
            self.display_pace.reset()
            self._apply_pace()

    def _pace_flush(self) -> None:
        if self.display_pace.active:
            trace = self.controller.trace
            self.display_pace.advance(len(trace) if trace is not None else 0)
            self.display_pace.flush()
            self._apply_pace()

    def _update_reveal_action(self) -> None:
        self.reveal_action.setEnabled(self.display_pace.active)
