"""What the window says when things go wrong: short messages a user can act on, the technical
report behind Details, several warnings shown together, writes that wait out a locked database,
exports that fail without touching the old file."""

from __future__ import annotations

import json
import sqlite3

import pytest

from app.core.session import GenerationSession
from backends.base import LoadSettings, SamplerSettings
from tests.gguf_factory import malformed
from tests.widgets.factory import wait_saved


def _generate(window, qtbot, prompt="The capital of France is", **kw):
    window.sampling_panel.set_settings(SamplerSettings(**{"max_tokens": 6, "seed": 3, **kw}))
    window.prompt_edit.setPlainText(prompt)
    with qtbot.waitSignal(window.controller.generationFinished, timeout=120_000) as blocker:
        window.generate_action.trigger()
    return blocker.args[0]


def test_an_unexpected_error_is_a_short_message_with_details(window, qtbot, monkeypatch):
    def broken(self):
        raise ZeroDivisionError("a bug inside")

    monkeypatch.setattr(GenerationSession, "start", broken)
    window.hide_banner()
    with qtbot.waitSignal(window.controller.unexpectedError, timeout=60_000):
        window.generate()
    text = window.banner_text()
    assert "unexpected error" in text and "ZeroDivisionError: a bug inside" in text
    assert "Traceback" not in text and "File " not in text
    assert "Traceback" in window.banner.details_text() and "broken" in window.banner.details_text()
    assert window.banner.details_button.isVisible()
    monkeypatch.undo()
    qtbot.waitUntil(lambda: window.controller.state == "ready", timeout=10_000)
    fin = _generate(window, qtbot)  # the app goes on
    assert fin.n_tokens == 6


def test_a_hostile_gguf_header_is_a_model_error_and_the_model_stays(window, qtbot, tmp_path):
    path = tmp_path / "deep.gguf"
    path.write_bytes(malformed()["5000 nested arrays"])
    name = window.controller.model_info.name
    window.hide_banner()
    with qtbot.waitSignal(window.controller.errorOccurred, timeout=60_000) as blocker:
        window.load_path(str(path))
    title, message = blocker.args
    assert title == "Model not loaded" and "nested more than" in message and f"Still using {name}" in message
    assert "Unexpected" not in window.banner_text()
    qtbot.waitUntil(lambda: window.controller.state == "ready", timeout=10_000)
    assert window.controller.model_info.name == name


def test_knob_ranges_come_from_one_place(window, qtbot):
    mp = window.model_panel
    for spin, name in ((mp.n_ctx, "n_ctx"), (mp.n_gpu, "n_gpu_layers"), (mp.n_threads, "n_threads")):
        assert (spin.minimum(), spin.maximum()) == LoadSettings.LIMITS[name]
    spin = window.sampling_panel._spins["repeat_penalty"]
    assert spin.minimum() == pytest.approx(SamplerSettings.LIMITS["repeat_penalty"][0]) and spin.minimum() > 0
    window.hide_banner()
    with qtbot.waitSignal(window.controller.errorOccurred, timeout=10_000) as blocker:
        window.controller.load_model(None, n_ctx=-5)
    assert blocker.args[0] == "Model not loaded" and "n_ctx = -5" in blocker.args[1]
    with qtbot.waitSignal(window.controller.errorOccurred, timeout=10_000) as blocker:
        window.controller.generate("", SamplerSettings())
    assert "prompt is empty" in blocker.args[1]


def test_a_locked_database_delays_the_save_but_loses_nothing(window, qtbot):
    path = window.controller.store.path
    before = len(window.controller.store.list_runs())
    other = sqlite3.connect(path, timeout=1, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        fin = _generate(window, qtbot, max_tokens=12)
        assert not window.controller.writer.idle  # the steps wait for the lock, in order
    finally:
        other.execute("ROLLBACK")
        other.close()
    wait_saved(window, qtbot)
    runs = window.controller.store.list_runs()
    assert len(runs) == before + 1 and runs[0].n_tokens == fin.n_tokens and runs[0].finish_reason == fin.reason


def test_a_failed_lab_export_leaves_the_old_file(window, qtbot, tmp_path, monkeypatch):
    target = tmp_path / "lab.json"
    target.write_text('{"old": true}\n')
    window.lab_tabs.setCurrentWidget(window.vs_panel)
    monkeypatch.setattr(window.vs_panel, "export_data", lambda: {"records": [1] * 1000, "bad": object()})
    window.hide_banner()
    assert window.export_lab_results(str(target)) is None
    assert "Export failed" in window.banner_text()
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["lab.json"]  # no temporary file left behind


def test_warnings_at_start_are_all_shown(qapp, tmp_path, monkeypatch):
    config, data = tmp_path / "config", tmp_path / "data"
    config.mkdir()
    data.mkdir()
    (config / "settings.json").write_text('{"remote": {"base_url": 5}, "n_ctx": -5}')
    (data / "runs.sqlite3").write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("SAMPLESCOPE_CONFIG_DIR", str(config))
    monkeypatch.setenv("SAMPLESCOPE_DATA_DIR", str(data))
    from app.main import create_window

    window = create_window(autoload=False)
    try:
        messages = window.banner.messages()
        assert any("remote.base_url" in m and "n_ctx" in m for m in messages), messages
        assert any("History disabled" in m and "damaged" in m for m in messages), messages
        window.show_banner("Generation failed: something")
        window.hide_banner()  # the next action: its own messages go, the start-up findings stay
        assert window.banner.messages() == messages
        window.banner.close_button.click()  # dismissed by the user
        assert window.banner.messages() == [] and window.banner_text() == ""
    finally:
        window.close()


def test_a_bug_in_a_lab_run_is_reported_and_the_lab_can_run_again(window, qtbot, monkeypatch):
    """An unexpected error inside a lab job: a short message with the traceback behind Details,
    and the lab's panel is usable again (its buttons were left disabled before)."""
    import app.labs.vs._qt.presenter

    def broken(*a, **kw):
        raise ZeroDivisionError("a bug inside the lab")

    monkeypatch.setattr(app.labs.vs._qt.presenter, "single_run_record", broken)
    p = window.vs_panel
    window.hide_banner()
    with qtbot.waitSignal(window.controller.labs.failed, timeout=60_000) as blocker:
        window.vs_once_action.trigger()
    failure = blocker.args[0]
    assert "ZeroDivisionError: a bug inside the lab" in failure.message
    assert "Traceback" in window.banner.details_text() and "broken" in window.banner.details_text()
    assert "Traceback" not in window.banner_text()
    assert p.run_once_button.isEnabled() and not p.stop_button.isEnabled()
    assert "ZeroDivisionError" in p.status.text()


def test_the_window_reacts_to_the_kind_of_failure_not_its_words(window):
    from app.workbench_control import ConnectionFailure, ModelLoadFailure

    window.controller.failed.emit(ConnectionFailure("the server said no", title="Other words"))
    assert window.connection_panel.status.text() == "the server said no"
    assert "Other words: the server said no" in window.banner_text()
    window.controller.failed.emit(ModelLoadFailure("that file is not a model", title="Words again"))
    assert window.model_panel.status.text() == "that file is not a model"
