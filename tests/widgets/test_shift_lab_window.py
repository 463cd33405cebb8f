"""The sampled-vs-ideal shift lab in the window, on the real embedded model (pytest-qt,
offscreen): a small concept set fills the table and the plots and lands in the run store, a
sampled run, a glubbing sweep, Stop, CSV import/export and bad input. Small for 2 cores."""

from __future__ import annotations

import math

import pytest

from app.labs.shift.concepts import BUILTIN_CONCEPTS
from app.labs.shift.records import ConceptRecord, GlubSummary, Prompts, ShiftRunSummary
from tests.widgets.factory import wait_saved


def _run(qtbot, window, button, timeout=300_000):
    with qtbot.waitSignal(window.controller.labs.finished, timeout=timeout) as blocker:
        button.click()
    wait_saved(window, qtbot)
    return blocker.args


@pytest.fixture(scope="module", autouse=True)
def small(window):
    p = window.shift_panel
    window.lab_tabs.setCurrentWidget(p)
    p.limit.setValue(2)
    p.min_mass.setValue(0.005)
    p.mode.setCurrentText("exact")


def test_exact_run_fills_table_plots_and_store(window, qtbot):
    p = window.shift_panel
    summary, status = _run(qtbot, window, p.run_button)
    assert status == "done", p.status.text()
    res = p.results()
    assert [r["concept_id"] for r in res["records"]] == [c.id for c in BUILTIN_CONCEPTS[:2]]
    assert p.results_table.rowCount() == 2 and p.progress.value() == 2
    # the first concept is selected: its exact distribution with A, I and mean S marked
    first = res["records"][0]
    dist = res["distribution"]
    assert dist["kind"] == "exact" and len(dist["x"]) == len(first["S_exact"]["values"])
    assert dist["height"].sum() == pytest.approx(1.0)
    for key in ("A", "I", "S"):
        assert dist["marks"][key] == pytest.approx(first[key])
    # the scatter holds the kept concepts, at (I - A, S - A)
    kept = [r for r in res["records"] if r["kept"]]
    sc = res["scatter"]
    assert list(sc["x"]) == pytest.approx([r["I"] - r["A"] for r in kept])
    assert list(sc["y"]) == pytest.approx([r["S"] - r["A"] for r in kept])
    assert isinstance(summary, ShiftRunSummary)
    assert f"{summary.n_used} of 2 concepts used" in p.summary_label.text()
    assert "two-sided" in p.summary_label.text()
    # results in the run store as they arrived, and in the table of models
    exp = window.controller.store.load_experiment(window.controller.labs.experiment_id)
    assert exp.kind == "shift" and exp.status == "done" and len(exp.records) == 2
    assert exp.summary["n_total"] == 2
    assert p.models_table.rowCount() >= 1 and p.models_table.item(0, 1).text() == "exact"
    # reopened from the history: the same table and plots
    before = p.results()
    p.start_results("concepts")
    window.open_lab_run(exp.id)
    after = p.results()
    assert after["records"] == before["records"] and p.results_table.rowCount() == 2
    assert list(after["scatter"]["x"]) == pytest.approx(list(before["scatter"]["x"]))
    # the raw view explains the exact coverage
    assert "numeric answers cover" in p.answers_view.toPlainText()
    # exports as in the workbench: JSON, CSV, PNG/SVG of the plot shown
    import csv
    import json

    tmp = window.controller.store.path.parent
    data = json.loads(open(window.export_lab_results(str(tmp / "shift.json")), encoding="utf-8").read())
    assert data["summary"]["n_total"] == 2 and len(data["records"]) == 2
    rows = list(csv.reader(open(window.export_lab_table(str(tmp / "shift.csv")), encoding="utf-8")))
    assert rows[0][:3] == ["concept_id", "name", "domain"] and len(rows) == 3
    p.tabs.setCurrentIndex(1)
    svg = window.export_lab_plot(str(tmp / "scatter.svg"))
    assert svg and "<svg" in open(svg, encoding="utf-8").read()
    p.tabs.setCurrentIndex(0)


def test_sampled_run_shows_a_histogram_and_raw_answers(window, qtbot):
    p = window.shift_panel
    p.mode.setCurrentText("sampled")
    p.samples.setValue(3)
    p.limit.setValue(1)
    try:
        summary, status = _run(qtbot, window, p.run_button)
    finally:
        p.mode.setCurrentText("exact")
        p.limit.setValue(2)
    assert status == "done"
    (rec,) = p.results()["records"]
    assert len(rec["S_answers"]) == 3
    dist = p.results()["distribution"]
    assert dist["kind"] == "sampled"
    parsed = [a for a in rec["S_answers"] if a["value"] is not None]
    if parsed:
        assert dist["height"].sum() == pytest.approx(1.0)
    assert p.answers_view.toPlainText().count("sample: ") == 3


def test_glubbing_sweep_plots_sample_against_average(window, qtbot):
    p = window.shift_panel
    p.glub_means.setText("30, 60")
    p.glub_valences.setText("positive, control")
    p.glub_examples.setValue(12)
    summary, status = _run(qtbot, window, p.glub_button)
    assert status == "done"
    recs = p.results()["glub_records"]
    assert [(r["valence"], r["mean"]) for r in recs] == [("positive", 30), ("positive", 60),
                                                         ("control", 30), ("control", 60)]
    glub = p.results()["glub"]
    assert set(glub) <= {"positive", "control"}
    for valence, (xs, ys) in glub.items():
        mine = [r for r in recs if r["valence"] == valence and r["S"] is not None]
        assert sorted(xs) == pytest.approx(sorted(r["average"] for r in mine))
    assert "Mean shift" in p.glub_note.text()
    assert isinstance(summary, GlubSummary) and set(summary.mean_shift) <= {"positive", "control"}
    # reopened from the history (a "glub" run: read with the glubbing types): the same records
    exp_id = window.controller.labs.experiment_id
    assert window.controller.store.load_experiment(exp_id).kind == "glub"
    p.start_results("glub")
    assert p.results()["glub_records"] == [] and p.glub_note.text() == ""
    window.open_lab_run(exp_id)
    assert p.results()["glub_records"] == recs and "Mean shift" in p.glub_note.text()
    assert f"Lab run #{exp_id}" in p.status.text()


def test_stop_keeps_finished_concepts(window, qtbot):
    p = window.shift_panel
    p.limit.setValue(5)
    labs = window.controller.labs
    try:
        with qtbot.waitSignal(labs.finished, timeout=300_000) as blocker:
            with qtbot.waitSignal(labs.record, timeout=120_000):
                p.run_button.click()
            window.stop_action.trigger()
    finally:
        p.limit.setValue(2)
    summary, status = blocker.args
    assert status == "stopped" and summary.cancelled is True
    assert 1 <= len(p.results()["records"]) < 5
    wait_saved(window, qtbot)
    assert window.controller.store.load_experiment(labs.experiment_id).status == "stopped"


def test_csv_round_trip_and_bad_input(window, tmp_path):
    p, lab = window.shift_panel, window.shift_lab
    path = lab.export_csv(str(tmp_path / "c.csv"))
    assert path and "Exported 48" in p.status.text()
    p.set_concepts(BUILTIN_CONCEPTS[:3])
    assert lab.import_csv(path) and p.concept_table.rowCount() == 48
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x01garbage")
    assert not lab.import_csv(str(bad)) and "Not imported" in p.status.text()
    assert p.concept_table.rowCount() == 48  # nothing lost
    # an unknown template field is refused before anything runs
    p.template_kind.setCurrentText("sample")
    p.template_edit.setPlainText("How many {foo}?")
    n = len(window.controller.store.list_experiments("shift"))
    p.run_button.click()
    assert "{foo}" in p.status.text() and not window.controller.labs.busy
    assert len(window.controller.store.list_experiments("shift")) == n
    p.reset_templates_button.click()
    assert "{question}" in p.template_edit.toPlainText()
    # model output stays plain text in the table
    p.start_results("concepts")
    p.add_record(ConceptRecord(concept_id="x", name="<b>bold</b>", domain="d", unit="u", mode="sampled",
                               prompts=Prompts("a", "i", "s"), A=1.0, I=2.0, S=1.5, alpha=0.5, alpha_hat=0.5,
                               kept=True, reason=None, seconds=0.0, S_answers=()))
    assert p.results_table.item(0, 0).text() == "<b>bold</b>"
    assert math.isclose(p.results()["scatter"]["x"][0], 1.0)


def test_glubbing_ideal_sweep(window, qtbot):
    p = window.shift_panel
    p.glub_sweep.setCurrentText("ideal")
    p.glub_means.setText("20, 70")
    p.glub_base_mean.setValue(45)
    p.glub_examples.setValue(12)
    try:
        summary, status = _run(qtbot, window, p.glub_button)
    finally:
        p.glub_sweep.setCurrentText("mean")
    assert status == "done"
    recs = p.results()["glub_records"]
    assert [(r["valence"], r["ideal_setting"]) for r in recs] == [("peaked", 20), ("peaked", 70)]
    assert recs[0]["ideal"] < recs[1]["ideal"]  # the graded ideal follows the setting
    assert all(r["mean"] == 45 for r in recs)
    (xs, _ys), = p.results()["glub"].values()
    assert sorted(xs) == pytest.approx(sorted(r["ideal"] for r in recs if r["S"] is not None))
