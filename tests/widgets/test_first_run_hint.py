"""The first-run hint: shown on the first start (app.main.create_window as run_gui calls it) until it
is dismissed, never again after that, and never in a window the tests build (first_run_hint off)."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from app.core.settings import AppSettings, settings_path


@pytest.fixture
def fresh_config(tmp_path, monkeypatch):
    """A first start: config and data directories of this test's own, no settings file yet."""
    monkeypatch.setenv("SAMPLESCOPE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SAMPLESCOPE_DATA_DIR", str(tmp_path / "data"))
    assert not settings_path().exists()
    return tmp_path


def _window(qtbot, *, first_run_hint):
    from app.main import create_window

    w = create_window(autoload=False, first_run_hint=first_run_hint)
    w.show()
    qtbot.waitExposed(w)
    return w


def test_the_hint_shows_once_and_not_after_it_is_dismissed(qapp, qtbot, fresh_config):
    w = _window(qtbot, first_run_hint=True)
    try:
        hint = w.first_run_hint
        assert hint.isVisible()
        text = hint.text()
        for what in ("Ctrl+Enter", "hover a token", "Experiments", "F10"):
            assert what in text
        assert hint.label.textFormat() == Qt.PlainText
        assert w.banner_text() == ""  # the error banner is not used for it
        qtbot.mouseClick(hint.ok_button, Qt.LeftButton)
        assert hint.isHidden() and hint.text() == ""
        # saved at once, before the window closes
        assert json.loads(settings_path().read_text(encoding="utf-8"))["show_first_run_hint"] is False
    finally:
        w.close()
    again = _window(qtbot, first_run_hint=True)
    try:
        assert again.app_settings.show_first_run_hint is False
        assert again.first_run_hint.isHidden()
        assert again.offer_first_run_hint() is False
    finally:
        again.close()


def test_the_close_button_dismisses_it_too_and_closing_without_dismissing_keeps_it(qapp, qtbot, fresh_config):
    w = _window(qtbot, first_run_hint=True)
    w.close()  # not dismissed: the next start shows it again
    assert json.loads(settings_path().read_text(encoding="utf-8"))["show_first_run_hint"] is True
    w = _window(qtbot, first_run_hint=True)
    try:
        assert w.first_run_hint.isVisible()
        qtbot.mouseClick(w.first_run_hint.close_button, Qt.LeftButton)
        assert w.first_run_hint.isHidden()
    finally:
        w.close()
    assert AppSettings.load().show_first_run_hint is False


def test_windows_built_for_tests_never_show_it(qapp, qtbot, fresh_config):
    w = _window(qtbot, first_run_hint=False)  # as tests/widgets/conftest.py's window fixture builds it
    try:
        assert w.app_settings.show_first_run_hint is True  # a first start, and yet
        assert w.first_run_hint.isHidden()
    finally:
        w.close()


def test_the_setting_reads_back_and_a_bad_value_is_reset(fresh_config):
    s = AppSettings()
    assert s.show_first_run_hint is True
    s.show_first_run_hint = False
    s.save()
    assert AppSettings.load().show_first_run_hint is False
    settings_path().write_text(json.dumps({"show_first_run_hint": "no"}), encoding="utf-8")
    loaded = AppSettings.load()
    assert loaded.show_first_run_hint is True and "show_first_run_hint" in loaded.warning
