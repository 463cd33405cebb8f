"""Runs stored by an earlier version still load: tests/data/runs-2026-12-02.sqlite3 was written by
the app of 2026-12-02 (``python -m tests.make_reference_store``): one Workbench run and one run of
each lab. Every later version must open them all, replay each lab run into its panel, and open the
generations they hold in the Workbench."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.core.records import Record
from app.core.store import RunStore
from app.lab_registry import lab_for_kind

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "runs-2026-12-02.sqlite3"


@pytest.fixture(scope="module")
def old_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("old") / "runs.sqlite3"
    shutil.copyfile(REFERENCE, path)  # opening may migrate: never the reference itself
    store = RunStore(path)
    yield store
    store.close()


def test_the_workbench_run_of_the_earlier_version_opens(window, qtbot, old_store):
    (head,) = old_store.list_runs()
    trace = old_store.load_run(head.id)
    assert trace.prompt == "The capital of France is" and len(trace) == 8
    assert trace.settings.seed == 7 and trace.finished is not None
    assert window.controller.open_trace(trace)
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
    assert window.token_view.rendered_count() == 8


def test_every_lab_run_of_the_earlier_version_replays_into_its_panel(window, qtbot, old_store):
    kinds = []
    for head in old_store.list_experiments():
        exp = old_store.load_experiment(head.id)
        spec = lab_for_kind(exp.kind)
        assert spec is not None, exp.kind
        kinds.append(exp.kind)
        lab = window.lab_presenters[spec.name]
        # as the window reads it: every record into the lab's typed records, none left out
        typed = spec.record_types().read_experiment(exp)
        assert typed.problems == (), typed.problems
        assert all(isinstance(r, Record) for r in typed.records)
        assert isinstance(typed.params, Record) and (typed.summary is None or isinstance(typed.summary, Record))
        lab.reopen(typed)  # raises if a record no longer fits the panel
        assert f"Lab run #{exp.id}" in lab.panel.status.text()
        assert exp.status == "done" and exp.records
    assert sorted(kinds) == ["align", "decoding", "shift", "vs"]
    assert len(window.vs_panel.results()["records"]) == 1
    assert len(window.shift_panel.results()["records"]) == 2
    assert len(window.align_panel.results()["runs"]) == 1
    assert window.decoding_panel.totals_table.rowCount() == 3


def test_a_stored_generation_of_the_earlier_version_opens_in_the_workbench(window, qtbot, old_store):
    vs = next(h for h in old_store.list_experiments() if h.kind == "vs")
    record = old_store.load_experiment(vs.id).records[0]
    (trace_record,) = record["traces"]
    assert window.open_generation(trace_record)
    qtbot.waitUntil(lambda: not window._dirty, timeout=5000)
    trace = window.controller.trace
    assert [s.token_id for s in trace.steps] == [s["token_id"] for s in trace_record["steps"]]
    assert trace.steps[0].stages[0].name == "grammar"
