"""kill -9 of a real generation in the window, then a restart: the run is in the History up to its
last saved step, marked interrupted, and the app says so.

The window runs in its own process (``samplescope gui --run``, offscreen), on the embedded
model, with its own settings and data folders; the test watches the run store from outside
until steps arrive, kills the process with SIGKILL (no chance to save anything more), then
starts the app again in this process on the same folders."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time


def _steps_saved(db_path) -> int:
    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM steps").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_kill_9_mid_generation_keeps_the_run_and_the_restart_says_so(tmp_path, monkeypatch, qapp, embedded_model):
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    settings = {"version": 1, "sampler": {"max_tokens": 4000, "temperature": 1.0, "seed": 1}, "n_threads": 2}
    (config / "settings.json").write_text(json.dumps(settings))
    env = {**os.environ, "SAMPLESCOPE_CONFIG_DIR": str(config), "SAMPLESCOPE_DATA_DIR": str(data),
           "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen([sys.executable, "-m", "app", "gui", "--prompt", "Once upon a time", "--run"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db_path = data / "runs.sqlite3"
    try:
        deadline = time.monotonic() + 300
        while _steps_saved(db_path) < 8:
            assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "no steps were saved while the run went on"
            try:
                proc.wait(timeout=0.2)  # the pause between looks; returns at once if the app died
            except subprocess.TimeoutExpired:
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    saved = _steps_saved(db_path)
    assert saved >= 8
    with sqlite3.connect(db_path) as db:
        (status, n_tokens), = db.execute("SELECT status, n_tokens FROM runs").fetchall()
    assert status == "running" and n_tokens == saved  # exactly as the dead process left it

    # the restart, on the same folders
    monkeypatch.setenv("SAMPLESCOPE_CONFIG_DIR", str(config))
    monkeypatch.setenv("SAMPLESCOPE_DATA_DIR", str(data))
    from app.main import create_window

    window = create_window(autoload=False)
    try:
        assert "interrupted" in window.banner_text() and "1 run(s)" in window.banner_text()
        (run,) = window.controller.store.list_runs()
        assert run.finish_reason == "interrupted" and run.n_tokens == saved
        assert "interrupted" in window.history_panel.list.item(0).text()
        trace = window.controller.open_run(run.id)
        assert len(trace) == saved and trace.finished.reason == "interrupted"
        assert trace.finished.text == trace.text and trace.text
    finally:
        window.close()
