"""The window's side of ``samplescope bench``'s ``gui_vs_headless`` (the Workbench streaming runs)
and of ``window_open_s`` (``--startup``: the window opened, no model, timed).

Run by the bench as a child process (``python -m app.bench_gui ...``) so the window lives as it
does for a user: its own process, its model loaded by the controller on the model worker, the
offscreen platform, plots live, the run saved to a history (in the throwaway directories the
bench gives it through ``SAMPLESCOPE_*_DIR``). It loads the model, generates once per seed of
``--seeds`` from the given prompt and settings by the Generate action, and prints one JSON line: ``tokens_per_s`` of each counted run (``Finished.tokens_per_s``, the figure
the headless command prints, measured the same way by the same session code) and the plot
redraws of each.

GUI thread only (the runs are driven from Qt's event loop).
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()  # before the heavy imports: the startup figure counts them

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def _startup() -> int:
    """The window opened as ``samplescope`` opens it, before any model loads: print when it is
    shown and painted (seconds since this process's imports began, and of that the window's
    construction alone)."""
    from PySide6.QtWidgets import QApplication

    from app.main import create_window

    app = QApplication.instance() or QApplication([sys.argv[0]])
    t0 = time.perf_counter()
    window = create_window(autoload=False)
    window.show()
    app.processEvents()
    window.repaint()  # painted, not only shown
    t1 = time.perf_counter()
    print(json.dumps({"shown_s": t1 - _T_START, "construct_s": t1 - t0}), flush=True)
    window.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.bench_gui")
    p.add_argument("--startup", action="store_true", help="only open the window (no model) and say when it is shown")
    p.add_argument("--model")
    p.add_argument("--prompt")
    p.add_argument("--settings", help="SamplerSettings as JSON")
    p.add_argument("--seeds", help="comma-separated seeds, one run each")
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a benchmark, not a window for the user
    if a.startup:
        return _startup()
    if not (a.model and a.prompt and a.settings and a.seeds):
        p.error("--model, --prompt, --settings and --seeds are needed for the streaming runs")

    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.main import create_window
    from app.workbench_control import State
    from backends.base import SamplerSettings

    app = QApplication.instance() or QApplication([sys.argv[0]])
    window = create_window(autoload=False)
    window.show()

    def wait(pred, timeout_s: float = 300.0) -> bool:
        loop = QEventLoop()
        timer = QTimer()
        timer.setInterval(20)
        end = time.monotonic() + timeout_s
        timer.timeout.connect(lambda: (pred() or time.monotonic() > end) and loop.quit())
        timer.start()
        if not pred():
            loop.exec()
        timer.stop()
        return pred()

    c = window.controller
    c.load_model(a.model, n_ctx=a.n_ctx, n_threads=a.threads)
    if not wait(lambda: c.model_info is not None and c.state == State.READY):
        print(json.dumps({"error": "the window did not load the model"}))
        return 1
    base = SamplerSettings.from_dict(json.loads(a.settings))
    window.prompt_edit.setPlainText(a.prompt)
    out = {"tokens_per_s": [], "plot_redraws": [], "n_tokens": []}
    for seed in (int(x) for x in a.seeds.split(",")):
        window.sampling_panel.set_settings(base.replace(seed=seed))
        done: list = []

        def finished(fin, done=done) -> None:
            done.append(fin)

        c.generationFinished.connect(finished)
        redraws = window.redraw_count
        window.generate_action.trigger()
        ok = wait(lambda: bool(done))
        c.generationFinished.disconnect(finished)
        if not ok:
            print(json.dumps({"error": "a run did not finish"}))
            return 1
        wait(lambda: c.state == State.READY)
        out["tokens_per_s"].append(done[0].tokens_per_s)
        out["plot_redraws"].append(window.redraw_count - redraws)
        out["n_tokens"].append(done[0].n_tokens)
    window.close()
    app.processEvents()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
