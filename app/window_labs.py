"""The window's labs: showing a lab's tab, reopening a stored lab run, opening a lab's
generation in the Workbench, the VS lab's menu entries, wiring a lab when its tab is built.

Owns: ``LabsMixin``, a part of ``MainWindow``; the labs themselves come from
``app.lab_registry``, their tabs from ``app.lab_tabs`` (made in ``MainWindow``, each built the
first time it is needed; ``window.<name>_panel`` and ``window.<name>_lab`` build it too). GUI
thread."""

from __future__ import annotations

from app.core.records import RecordError
from app.lab_registry import lab_for_kind

__all__ = ["LabsMixin"]


class LabsMixin:
    """The labs' part of ``MainWindow`` (see the module docstring)."""

    def __getattr__(self, attr: str):
        """``<name>_panel`` and ``<name>_lab``: a registered lab's panel and presenter (built now
        if its tab has not been opened yet)."""
        tabs = self.__dict__.get("lab_tab_set")
        for suffix, which in (("_panel", "panels"), ("_lab", "presenters")):
            name = attr[: -len(suffix)] if attr.endswith(suffix) else None
            if tabs is not None and name in tabs.panels:
                return getattr(tabs, which)[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")

    def _on_lab_built(self, spec, panel, presenter) -> None:
        """A lab's tab was just built: connect it as every lab is."""
        panel.openTraceRequested.connect(self.open_generation)
        self._style_new_lab(panel)

    def show_lab(self, name: str) -> None:
        """Open the tab ``name``: "workbench" or a registered lab's name ("vs", "shift", ...)."""
        if name == "workbench":
            self.lab_tabs.setCurrentIndex(0)
        else:
            self.lab_tabs.setCurrentWidget(self.lab_panels[name])

    def _vs_run_once(self) -> None:
        self.lab_tabs.setCurrentWidget(self.vs_panel)
        self.vs_lab.run_once()

    def _vs_compare(self) -> None:
        self.lab_tabs.setCurrentWidget(self.vs_panel)
        self.vs_lab.compare()

    def open_lab_run(self, experiment_id: int) -> None:
        """Show a stored lab run in its lab tab (its records replayed into the panel)."""
        if self.controller.labs.busy:
            self.show_banner("A lab run is going: stop it (Esc) before opening another one.")
            return
        try:
            exp = self.controller.store.load_experiment(experiment_id)
        except Exception as exc:  # noqa: BLE001
            self.show_banner(f"Lab run not opened: {exc}")
            return
        spec = lab_for_kind(exp.kind)
        lab = self.lab_presenters.get(spec.name) if spec is not None else None
        if spec is None or lab is None:
            self.show_banner(f"Lab run #{experiment_id} is of a kind this version does not know ({exp.kind}).")
            return
        try:
            exp = spec.record_types().read_experiment(exp)
        except RecordError as exc:
            self.show_banner(f"Lab run #{experiment_id} not opened: {exc}")
            return
        self.lab_tabs.setCurrentWidget(lab.panel)
        lab.reopen(exp)
        if exp.problems:
            self.show_banner(f"Lab run #{experiment_id}: {len(exp.problems)} record(s) could not be read and are "
                             f"not shown ({exp.problems[0]}{'; …' if len(exp.problems) > 1 else ''}).")

    def _delete_lab_run(self, experiment_id: int) -> None:
        try:
            self.controller.store.delete_experiment(experiment_id)
        except Exception as exc:  # noqa: BLE001
            self.show_banner(f"Lab run not deleted: {exc}")
        self._refresh_history()

    def open_generation(self, record: dict) -> bool:
        """Show a generation made in a lab (a VS answer, a sampled answer, an align run, a
        decoding column, a beam, a branch) in the Workbench tab, with the settings that made it."""
        from app.core.export import TraceFormatError, trace_from_generation

        try:
            trace = trace_from_generation(record)
        except TraceFormatError as exc:
            self.show_banner(f"Not opened: {exc}")
            return False
        if not self.controller.open_trace(trace):
            return False
        self.lab_tabs.setCurrentIndex(0)
        self.statusBar().showMessage(f"Opened a lab generation: {len(trace)} tokens", 5000)
        return True
