"""Every lab generation opens in the Workbench: a VS answer, a decoding column, a beam and a
branch path, each shown in the token view, the distribution plot and the entropy timeline with the
settings that made it, also when reopened from the History."""

from __future__ import annotations

import pytest

from app.labs.decoding import BranchTree
from widgets.sampling_panel import describe_chain
from tests.widgets.factory import wait_saved


def _run(qtbot, window, trigger):
    with qtbot.waitSignal(window.controller.labs.finished, timeout=300_000) as blocker:
        trigger()
    wait_saved(window, qtbot)
    return blocker.args


def _shown(window, qtbot, trace_record):
    """The Workbench shows exactly the generation's steps."""
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
    trace = window.controller.trace
    assert window.lab_tabs.currentIndex() == 0
    assert [s.token_id for s in trace.steps] == [s["token_id"] for s in trace_record["steps"]]
    assert trace.settings.to_dict()["seed"] == trace_record["settings"]["seed"]
    assert window.token_view.rendered_count() == len(trace_record["steps"])
    assert len(window.entropy_plot.curve_data()["entropy_raw"][0]) == len(trace_record["steps"])
    # the knobs say the settings that made it (the lab's, not the Workbench's)
    knobs = window.sampling_panel.settings()
    for key in ("temperature", "top_k", "top_p", "min_p", "seed", "max_tokens"):
        assert getattr(knobs, key) == pytest.approx(trace_record["settings"][key], abs=1e-3), key
    assert window.sampling_panel.used_label.text() == describe_chain(knobs)
    return trace


def test_a_vs_answer_opens_in_the_workbench_with_its_grammar_stage(window, qtbot):
    p = window.vs_panel
    p.method.setCurrentText("VS-Standard")
    summary, status = _run(qtbot, window, window.vs_once_action.trigger)
    assert status == "done"
    (rec,) = p.results()["records"]
    (trace_record,) = rec["traces"]
    assert p.open_answer_button.isEnabled()
    p.open_answer_button.click()
    trace = _shown(window, qtbot, trace_record)
    assert trace.text == rec["raw"]
    # the grammar is a stage of the chain, shown like the others
    assert trace.steps[0].stages[0].name == "grammar" and trace.steps[0].grammar_p_before is not None
    window.select_step(0)
    assert "grammar" in window.distribution_plot.stage_names()
    # reopened from the History: the stored record opens the same way
    exp = window.controller.store.load_experiment(window.controller.labs.experiment_id)
    window.lab_tabs.setCurrentWidget(p)
    assert window.open_generation(exp.records[0]["traces"][0])
    _shown(window, qtbot, trace_record)


def test_a_decoding_column_a_beam_and_a_path_open_in_the_workbench(window, qtbot):
    p = window.decoding_panel
    p.strategies_edit.setText("greedy, beam:2, top-k:20")
    p.max_tokens.setValue(6)
    summary, status = _run(qtbot, window, p.run_button.click)
    assert status == "done"
    column = summary.columns[2]
    (label, record), = p._column_traces(2)
    assert label == column.label and record is column.trace
    p.openTraceRequested.emit(record)
    trace = _shown(window, qtbot, record)
    assert trace.text == column.text and trace.steps[0].stages  # a sampled column: its chain's stages
    (label, beam_record), = p._beam_traces(1)
    p.openTraceRequested.emit(beam_record)
    _shown(window, qtbot, beam_record)
    # a branch path, from a tree made of the Workbench run
    tree = BranchTree.from_steps("p", None, trace.steps, trace.settings, "m")
    rec = tree.path_generation(tree.leaves()[-1])
    assert window.open_generation(rec)
    _shown(window, qtbot, rec)
