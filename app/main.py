"""Start the window: QApplication, settings, run store, controller, main window.

Owns: ``run_gui`` and ``create_window`` (used by the GUI tests too). Runs on the main
(GUI) thread.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["run_gui", "create_window"]


def create_window(*, autoload: bool = True, first_run_hint: bool = False):
    """Build controller and window with the user's settings and run store; ``first_run_hint``:
    show the first-run hint unless the user dismissed it (the app does; tests ask for it)."""
    from app.controller import WorkbenchController
    from app.core.settings import AppSettings
    from app.core.store import RunStore, StoreError
    from app.main_window import MainWindow

    from backends.llama_engine import THREADS

    # when the Workbench and a lab decode at once, one core stays free for drawing the window
    THREADS.reserve = 1 if THREADS.total > 2 else 0
    settings = AppSettings.load()
    store = None
    store_error = ""
    interrupted = (0, 0)
    try:
        store = RunStore()
        interrupted = store.mark_interrupted()  # runs a crash or a kill left "running"
    except StoreError as exc:
        store_error = str(exc)
    controller = WorkbenchController(store=store)
    window = MainWindow(controller, settings, autoload=autoload)
    if store_error:
        window.show_banner(f"History disabled: {store_error}", sticky=True)
    if first_run_hint:
        window.offer_first_run_hint()
    n_runs, n_labs = interrupted
    if n_runs or n_labs:
        what = " and ".join(x for x in (f"{n_runs} run(s)" if n_runs else "", f"{n_labs} lab run(s)" if n_labs else "")
                            if x)
        window.show_banner(f"Samplescope was stopped during {what} last time (a crash or a kill): they are in the "
                           "History, marked interrupted, with every step saved before that.", sticky=True)
    return window


def run_gui(argv: list[str] | None = None, *, prompt: str | None = None, autorun: bool = False,
            step_mode: bool = False, lab: str | None = None) -> int:
    from PySide6.QtWidgets import QApplication

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    app.setApplicationName("Samplescope")
    app.setOrganizationName("samplescope")
    window = create_window(first_run_hint=True)
    if prompt:
        window.prompt_edit.setPlainText(prompt)
    if step_mode:
        window.step_mode_action.setChecked(True)
    if lab:
        window.show_lab(lab)
    if autorun:
        window.run_when_ready()
    window.show()
    return app.exec()
