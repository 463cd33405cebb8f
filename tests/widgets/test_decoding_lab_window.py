"""The decoding strategies and branching lab in the window, on the real embedded model
(pytest-qt, offscreen): the lockstep view's data, branching from the workbench run by a
right-click alternative and N children, A/B, bad input. Small for 2 cores."""

from __future__ import annotations

import math

import pytest

from app.core.jsonsafe import json_safe
from app.core.records import plain
from app.labs.decoding.records import ColumnRecord, LockstepSummary, RunParams, StepRecord, TreeSummary
from backends.base import SamplerSettings
from tests.widgets.factory import wait_saved


def same_tree(a, b) -> bool:
    """The same branch tree, an unknown number (NaN) equal to another (as their JSON forms)."""
    return a is not None and b is not None and json_safe(plain(a)) == json_safe(plain(b))


def _run(qtbot, window, trigger, timeout=300_000):
    with qtbot.waitSignal(window.controller.labs.finished, timeout=timeout) as blocker:
        trigger()
    wait_saved(window, qtbot)
    return blocker.args


@pytest.fixture(scope="module", autouse=True)
def small(window):
    p = window.decoding_panel
    window.lab_tabs.setCurrentWidget(p)
    p.max_tokens.setValue(6)
    p.strategies_edit.setText("greedy, beam:2, top-k:40, temp:1.3")
    p.prompt_edit.setPlainText("The capital of France is")


def test_lockstep_columns_fill_the_grid_with_totals(window, qtbot):
    p = window.decoding_panel
    records = []
    window.controller.labs.record.connect(records.append)
    try:
        summary, status = _run(qtbot, window, p.run_button.click)
    finally:
        window.controller.labs.record.disconnect(records.append)
    assert status == "done", p.status.text()
    assert isinstance(summary, LockstepSummary)
    steps = [r for r in records if isinstance(r, StepRecord)]
    # lockstep: every column's step k arrives before any column's step k+1
    ks = [r.step for r in steps]
    assert ks == sorted(ks)
    data = p.columns_data()
    assert data["labels"] == [c.label for c in summary.columns] and len(data["labels"]) == 4
    for col, c in zip(data["tokens"], summary.columns):
        assert len(col) == c.length
    assert data["fork"] == summary.fork_step
    if data["fork"] is not None:
        assert "fork" in p.columns_table.verticalHeaderItem(data["fork"]).text()
    assert p.totals_table.rowCount() == 4
    for i, c in enumerate(summary.columns):
        assert p.totals_table.item(i, 4).text() == str(c.length)
        if c.perplexity is not None:
            assert math.isclose(c.perplexity, math.exp(-c.total_logprob / c.length), rel_tol=1e-6)
    assert p.beams_table.rowCount() == 2  # beam:2 lists its beams with summed log-probabilities
    exp = window.controller.store.load_experiment(window.controller.labs.experiment_id)
    assert exp.kind == "decoding" and exp.status == "done" and len(exp.records) == len(records)
    # the store holds the records' dict forms; the panel gives its data back as plain data too
    assert exp.records[0] == {**records[0].to_dict()} and exp.params["mode"] == "columns"
    assert p.results()["summary"]["columns"][0]["label"] == summary.columns[0].label
    header, rows = p.csv_rows()
    assert len(rows) == len(steps) and header[0] == "column"


def test_branching_from_the_workbench_run(window, qtbot):
    w = window
    w.sampling_panel.set_settings(SamplerSettings(temperature=0.8, seed=5, max_tokens=6, top_n=10))
    w.prompt_edit.setPlainText("The capital of France is")
    with qtbot.waitSignal(w.controller.generationFinished, timeout=120_000):
        w.generate_action.trigger()
    p, lab = w.decoding_panel, w.decoding_lab
    _run(qtbot, w, p.from_workbench_button.click)
    tree = lab.tree
    n_steps = len(w.controller.trace.steps)
    assert len(tree.nodes) == n_steps + 1 and p.path_table.rowCount() == n_steps
    # right-click the third token: its alternatives, "Type a token…", "Generate N children here"
    menu = p.path_menu_for(2)
    texts = [a.text() for a in menu.actions() if a.text()]
    assert texts[-2] == "Type a token…" and texts[-1].startswith("Generate 3 children")
    take = [a for a in menu.actions() if a.text().startswith("Take ")]
    assert take
    _run(qtbot, w, take[0].trigger)
    tree = lab.tree
    forced = [n for n in tree.nodes if n.forced]
    assert len(forced) == 1
    # the new branch hangs off the same parent as the third token of the first path, and the
    # path view now shows it (the forced token third)
    nodes = {n.id: n for n in tree.nodes}
    first_path = tree.runs[0]["leaf"]
    third = first_path
    while nodes[third].parent != 0 and nodes[nodes[third].parent].parent != 0 \
            and nodes[nodes[nodes[third].parent].parent].parent != 0:
        third = nodes[third].parent
    assert nodes[forced[0].id].parent == nodes[third].parent
    assert p._path[2] == forced[0].id
    # cumulative probability of the open path = product of its edges' raw probabilities
    expected = math.prod(nodes[i].p_raw for i in p._path)
    assert float(p.path_table.item(len(p._path) - 1, 3).text()) == pytest.approx(expected, rel=1e-3)
    # N children from the root's first token
    before = len(tree.runs)
    p.children_n.setValue(2)
    _run(qtbot, w, lambda: p.childrenRequested.emit(0, 2))
    assert len(lab.tree.runs) == before + 2
    assert [r["kind"] for r in lab.tree.runs[-2:]] == ["child", "child"]
    assert p.tree_widget.topLevelItemCount() == 1 and p.tree_widget.topLevelItem(0).childCount() >= 2
    # the tree is in the run store: reopening the last lab run brings it back
    grown = lab.tree
    lab.tree = None
    p.set_tree(None)
    w.open_lab_run(w.controller.labs.experiment_id)
    assert same_tree(lab.tree, grown) and p.tree_widget.topLevelItemCount() == 1
    # a run straight from the store (dicts) replays the same way
    lab.tree = None
    exp = w.controller.store.load_experiment(w.controller.labs.experiment_id)
    assert exp.params["mode"] == "branch" and "schema" in exp.summary
    lab.replay(exp)
    assert same_tree(lab.tree, grown) and same_tree(TreeSummary.from_dict(exp.summary).tree, grown)


def test_ab_two_settings(window, qtbot):
    p = window.decoding_panel
    p.ab_a.setText("greedy")
    p.ab_b.setText("temp:1.5")
    summary, status = _run(qtbot, window, p.ab_button.click)
    assert status == "done"
    plot = p.ab_plot.data()
    assert len(plot["x"]) == summary.n_compared and plot["fork"] == summary.first_fork
    assert summary.agreement == pytest.approx(plot["agree"].mean())
    assert "agreement" in p.ab_note.text()


def test_bad_input_is_refused_with_the_reason(window):
    from app.cli import build_parser

    assert build_parser().parse_args(["gui", "--lab", "decoding"]).lab == "decoding"
    window.show_lab("workbench")
    assert window.lab_tabs.currentIndex() == 0
    window.show_lab("decoding")
    p = window.decoding_panel
    assert window.lab_tabs.currentWidget() is p
    p.strategies_edit.setText("greedy, nucleus:0.9")
    p.run_button.click()
    assert "nucleus" in p.status.text() and not window.controller.labs.busy
    p.strategies_edit.setText("greedy, beam:2, top-k:40, temp:1.3")
    p.ab_a.setText("beam:2")
    p.ab_button.click()
    assert "beam" in p.status.text() and not window.controller.labs.busy
    p.ab_a.setText("greedy")
    p.ab_model_b.setText("/no/such/model.gguf")
    p.ab_button.click()
    assert "no file" in p.status.text()
    p.ab_model_b.setText("")
    p.stop_edit.setText("end\\n|.")
    assert p.params().stop == ("end\n", ".") and isinstance(p.params(), RunParams)
    p.stop_edit.setText("")
    # model text stays plain
    p.start_columns()
    p.add_record(ColumnRecord(0, "greedy", "greedy"))
    p.add_record(StepRecord(0, "greedy", 0, "<b>x</b>", p_raw=0.5))
    assert p.columns_table.item(0, 0).text() == "<b>x</b>"


def test_with_a_server_what_it_cannot_do_is_greyed_out_and_sampled_columns_run(window, qtbot, llama_server):
    cp = window.connection_panel
    cp.preset.setCurrentText("llama-cpp-python server")
    cp.base_url.setText(llama_server.base_url)
    cp.model.setCurrentText(llama_server.model)
    cp.completion_mode.setChecked(True)
    with qtbot.waitSignal(window.controller.remoteConnected, timeout=120_000):
        cp.connect_button.click()
    qtbot.waitUntil(lambda: window.controller.state == "ready", timeout=10_000)
    p = window.decoding_panel
    assert not p.remote_note.isHidden() and "beam" in p.remote_note.text()
    assert not p.ab_model_b.isEnabled()
    p.strategies_edit.setText("greedy, beam:2")
    p.run_button.click()
    assert "beam" in p.status.text().lower() and not window.controller.labs.busy
    p.strategies_edit.setText("greedy, temp:1.3")
    p.max_tokens.setValue(3)
    summary, status = _run(qtbot, window, p.run_button.click)
    assert status == "done" and len(summary.columns) == 2
    assert all(c.length >= 1 for c in summary.columns)
    window.controller.disconnect_remote()  # back to the local model: everything is available again
    assert p.remote_note.isHidden() and p.ab_model_b.isEnabled()
