"""Writes tests/data/runs-2026-12-02.sqlite3: a run store made by the app of 2026-12-02 (one
Workbench run, one run of each lab), which tests/widgets/test_stored_runs.py loads to prove that
later versions still read stored runs. Run it only to make a new reference file (with the app of
that day): ``QT_QPA_PLATFORM=offscreen python -m tests.make_reference_store``."""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "data" / "runs-2026-12-02.sqlite3"


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    for name in ("CONFIG", "DATA", "CACHE"):
        os.environ[f"SAMPLESCOPE_{name}_DIR"] = str(tmp / name.lower())
    os.environ["SAMPLESCOPE_CACHE_DIR"] = os.environ.get("REAL_CACHE", str(Path.home() / ".cache" / "samplescope"))
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.main import create_window
    from backends.base import SamplerSettings

    _app = QApplication.instance() or QApplication(sys.argv)  # kept alive for the whole run

    def wait(cond, seconds=300.0) -> bool:
        loop = QEventLoop()
        t = QTimer()
        t.timeout.connect(lambda: loop.quit() if cond() else None)
        t.start(50)
        QTimer.singleShot(int(seconds * 1000), loop.quit)
        loop.exec()
        t.stop()
        return cond()

    w = create_window(autoload=True)
    c = w.controller
    assert wait(lambda: c.model_info is not None and c.state == "ready")
    w.sampling_panel.set_settings(SamplerSettings(max_tokens=8, seed=7))
    w.prompt_edit.setPlainText("The capital of France is")
    done: list = []
    c.generationFinished.connect(done.append)
    w.generate_action.trigger()
    assert wait(lambda: bool(done))

    def lab(trigger) -> None:
        ended: list = []
        c.labs.finished.connect(lambda *a: ended.append(a))
        trigger()
        assert wait(lambda: bool(ended)), "a lab run did not end"

    w.vs_panel.method.setCurrentText("VS-Standard")
    lab(w.vs_once_action.trigger)
    sp = w.shift_panel
    sp.limit.setValue(2)
    sp.min_mass.setValue(0.005)
    sp.mode.setCurrentText("exact")
    lab(sp.run_button.click)
    ap = w.align_panel
    ap.draws.setValue(5)
    ap.runs.setValue(1)
    lab(ap.run_button.click)
    dp = w.decoding_panel
    dp.max_tokens.setValue(6)
    dp.strategies_edit.setText("greedy, beam:2, temp:1.3")
    dp.prompt_edit.setPlainText("The capital of France is")
    lab(dp.run_button.click)
    assert wait(lambda: c.writer is None or c.writer.idle)
    store_path = Path(c.store.path)
    w.close()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.unlink(missing_ok=True)
    src, dst = sqlite3.connect(store_path), sqlite3.connect(OUT)
    with dst:
        src.backup(dst)  # one self-contained file (the store runs in WAL mode)
    dst.execute("PRAGMA journal_mode=DELETE")
    src.close()
    dst.close()
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
