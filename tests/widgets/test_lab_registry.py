"""Adding a lab is its own parts and one registry line: a toy lab registered that way gets its tab,
runs on the real model through the lab runner, is stored, and reopens from the History."""

from __future__ import annotations

import pytest

from app import lab_registry
from tests.widgets import toy_lab
from tests.widgets.factory import wait_saved


@pytest.fixture(scope="module")
def toy_window(qapp):
    from pytestqt.qtbot import QtBot

    from app.main import create_window

    lab_registry.register(toy_lab.SPEC)
    try:
        w = create_window(autoload=True)
        w.show()
        bot = QtBot(None)
        bot.waitUntil(lambda: w.controller.model_info is not None, timeout=120_000)
        bot.waitUntil(lambda: w.controller.state == "ready", timeout=10_000)
        yield w
        w.close()
    finally:
        lab_registry.LABS.remove(toy_lab.SPEC)


def test_the_registry_lists_each_lab_once_and_finds_stored_kinds():
    names = [s.name for s in lab_registry.LABS]
    assert names[:4] == ["vs", "shift", "align", "decoding"] and len(set(names)) == len(names)
    assert lab_registry.lab_for_kind("glub").name == "shift"
    assert lab_registry.lab_for_kind("no such kind") is None
    with pytest.raises(ValueError, match="already registered"):
        lab_registry.register(lab_registry.lab_named("vs"))


def test_a_registered_toy_lab_has_its_tab_runs_is_stored_and_reopens(toy_window, qtbot):
    w = toy_window
    panel = w.toy_panel
    assert w.lab_tabs.tabText(w.lab_tabs.indexOf(panel)) == "Toy lab"
    w.show_lab("toy")
    assert w.lab_tabs.currentWidget() is panel
    with qtbot.waitSignal(w.controller.labs.finished, timeout=120_000) as blocker:
        w.toy_lab.run(n=3)
    summary, status = blocker.args
    assert status == "done" and summary.n == 3
    assert panel.rows.count() == 3
    wait_saved(w, qtbot)
    exp_id = w.controller.labs.experiment_id
    exp = w.controller.store.load_experiment(exp_id)
    assert exp.kind == "toy" and [r["i"] for r in exp.records] == [0, 1, 2]
    # reopened from the History: the registry finds the lab by the stored kind
    panel.rows.clear()
    w.show_lab("workbench")
    w.open_lab_run(exp_id)
    assert w.lab_tabs.currentWidget() is panel and panel.rows.count() == 3
    assert panel.summary[0] == summary  # the typed summary read back equals the one made live
