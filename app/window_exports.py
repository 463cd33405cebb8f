"""The window's exports: the shown run (JSON, CSV), a plot (PNG, SVG), the open lab's results,
table and plot.

Owns: ``ExportsMixin``, a part of ``MainWindow`` (it uses the window's controller, plots, lab
tabs and status bar). GUI thread. Files are written atomically by ``app.core.export``; a failed
export keeps the old file and says why in the banner."""

from __future__ import annotations

import logging

from PySide6.QtWidgets import QFileDialog

from app.core.export import write_lab_csv, write_lab_json

log = logging.getLogger(__name__)

__all__ = ["ExportsMixin"]


class ExportsMixin:
    """The exports of ``MainWindow`` (see the module docstring)."""

    def _current_lab(self):
        """The lab panel of the open tab, or None (after saying so) on the workbench tab."""
        panel = self.lab_tabs.currentWidget()
        if self.lab_tab_set.is_panel(panel):
            return panel
        self.statusBar().showMessage("Open a lab tab first: these exports are of a lab's results.", 5000)
        return None

    def _save_path(self, title: str, name: str, filters: str, path: str | None) -> str | None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, title, name, filters)
        return path or None

    def export_lab_results(self, path: str | None = None) -> str | None:
        """The open lab's knobs, records and summary as one JSON file (no secrets: an API key
        is never part of them)."""
        panel = self._current_lab()
        if panel is None or not (path := self._save_path("Export lab results", "samplescope-lab.json",
                                                          "JSON (*.json)", path)):
            return None
        try:
            write_lab_json(panel.export_data(), path)
        except (OSError, TypeError, ValueError) as exc:
            self.show_banner(f"Export failed: {exc}")
            return None
        self.statusBar().showMessage(f"Exported {path}", 5000)
        return path

    def export_lab_table(self, path: str | None = None) -> str | None:
        panel = self._current_lab()
        if panel is None or not (path := self._save_path("Export lab table", "samplescope-lab.csv",
                                                          "CSV (*.csv)", path)):
            return None
        header, rows = panel.csv_rows()
        try:
            write_lab_csv(header, rows, path)
        except OSError as exc:
            self.show_banner(f"Export failed: {exc}")
            return None
        self.statusBar().showMessage(f"Exported {path}", 5000)
        return path

    def export_lab_plot(self, path: str | None = None) -> str | None:
        panel = self._current_lab()
        if panel is None:
            return None
        plot = panel.current_plot()
        if plot is None:
            self.statusBar().showMessage("This view has no plot: pick a plot tab of the lab.", 5000)
            return None
        return self.export_plot(plot, path)

    def export_run(self, fmt: str, path: str | None = None) -> str | None:
        from app.core.export import write_csv, write_json

        trace = self.controller.trace
        if trace is None or not trace.steps:
            self.show_banner("Nothing to export yet: generate or open a run first.")
            return None
        if path is None:
            filt = "JSON (*.json)" if fmt == "json" else "CSV (*.csv)"
            path, _ = QFileDialog.getSaveFileName(self, f"Export run as {fmt.upper()}", f"samplescope-run.{fmt}", filt)
            if not path:
                return None
        try:
            (write_json if fmt == "json" else write_csv)(trace, path)
        except OSError as exc:
            self.show_banner(f"Export failed: {exc}")
            return None
        self.statusBar().showMessage(f"Exported {path}", 5000)
        return path

    def export_plot(self, plot, path: str | None = None) -> str | None:
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Export plot", "samplescope-plot.png", "PNG image (*.png);;SVG vector (*.svg)"
            )
            if not path:
                return None
        try:
            plot.export(path)
        except Exception as exc:  # noqa: BLE001
            self.show_banner(f"Plot export failed: {exc}")
            return None
        self.statusBar().showMessage(f"Exported {path}", 5000)
        return path
