"""Shared fixture of the window tests: one real window per test module, with the embedded model
loaded as at start-up."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def window(qapp):
    from pytestqt.qtbot import QtBot

    from app.main import create_window

    w = create_window(autoload=True)
    w.show()
    bot = QtBot(None)
    bot.waitUntil(lambda: w.controller.model_info is not None, timeout=120_000)
    bot.waitUntil(lambda: w.controller.state == "ready", timeout=10_000)
    yield w
    w.close()
