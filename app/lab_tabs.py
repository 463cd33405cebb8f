"""The window's lab tabs, each built the first time it is needed.

Owns: ``LabTabs``. For every registered lab (``app.lab_registry.LABS``) it adds a tab to the
window's tab widget that holds an empty placeholder; the lab's panel and presenter are made the
first time the tab is opened or either of them is asked for (``build(name)``, or the
``panels`` / ``presenters`` mappings), and the panel then takes the placeholder's place
in the same tab, with the same title and tooltip. The window so opens without building four labs
a user may never look at (``window_open_s`` of ``samplescope bench``'s ``startup`` section:
0.66 s with every lab built up front, 0.47 s this way, measured back to back). Once built, a
tab's page is its panel, as if it had been there from the start. GUI thread.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Callable

from PySide6.QtWidgets import QTabWidget, QWidget

__all__ = ["LabTabs"]


class _Built(Mapping):
    """``name -> panel`` (or presenter) of every lab; looking one up builds it."""

    def __init__(self, tabs: "LabTabs", which: int) -> None:
        self._tabs, self._which = tabs, which

    def __getitem__(self, name: str) -> Any:
        return self._tabs.build(name)[self._which]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tabs.names())

    def __len__(self) -> int:
        return len(self._tabs.names())

    def __contains__(self, name: object) -> bool:  # asking does not build
        return name in self._tabs.names()


class LabTabs:
    """The lab tabs of ``tabs`` (see the module docstring). ``specs`` are the labs in tab order;
    ``make(spec, panel)`` makes the presenter of a panel just built; ``on_built(spec, panel,
    presenter)`` is told of each lab once it is built (the window connects it there)."""

    def __init__(self, tabs: QTabWidget, specs, make: Callable[[Any, QWidget], Any],
                 on_built: Callable[[Any, QWidget, Any], None]) -> None:
        self._tabs = tabs
        self._specs = {spec.name: spec for spec in specs}
        self._make, self._on_built = make, on_built
        self._placeholders: dict[str, QWidget] = {}
        self._built: dict[str, tuple[QWidget, Any]] = {}
        for spec in self._specs.values():
            placeholder = QWidget()
            placeholder.setObjectName(f"lab-placeholder-{spec.name}")
            self._placeholders[spec.name] = placeholder
            index = tabs.addTab(placeholder, spec.title)
            tabs.setTabToolTip(index, spec.tooltip)
        tabs.currentChanged.connect(self._on_current)
        #: name -> panel / presenter of every lab, built on first look-up
        self.panels: Mapping[str, QWidget] = _Built(self, 0)
        self.presenters: Mapping[str, Any] = _Built(self, 1)

    def names(self) -> list[str]:
        return list(self._specs)

    def built(self) -> dict[str, tuple[QWidget, Any]]:
        """``name -> (panel, presenter)`` of the labs built so far (nothing is built by asking)."""
        return dict(self._built)

    def is_panel(self, widget: QWidget | None) -> bool:
        """Whether ``widget`` is a lab's panel (a placeholder is not)."""
        return any(widget is panel for panel, _ in self._built.values())

    def build(self, name: str) -> tuple[QWidget, Any]:
        """The lab ``name``'s panel and presenter, made now if not yet (KeyError for a name that
        is not a lab's)."""
        done = self._built.get(name)
        if done is not None:
            return done
        spec = self._specs[name]
        panel = spec.make_panel()
        presenter = self._make(spec, panel)
        self._built[name] = (panel, presenter)
        self._swap_in(name, panel)
        self._on_built(spec, panel, presenter)
        return panel, presenter

    def _swap_in(self, name: str, panel: QWidget) -> None:
        tabs, placeholder = self._tabs, self._placeholders.pop(name)
        index = tabs.indexOf(placeholder)
        current = tabs.currentIndex()
        title, tip = tabs.tabText(index), tabs.tabToolTip(index)
        blocked = tabs.blockSignals(True)  # the current tab does not change: nobody is told it did
        try:
            tabs.removeTab(index)
            tabs.insertTab(index, panel, title)
            tabs.setTabToolTip(index, tip)
            tabs.setCurrentIndex(current)
        finally:
            tabs.blockSignals(blocked)
        placeholder.deleteLater()

    def _on_current(self, index: int) -> None:
        page = self._tabs.widget(index)
        for name, placeholder in list(self._placeholders.items()):
            if page is placeholder:
                self.build(name)
                return
