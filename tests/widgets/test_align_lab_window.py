"""The P_token vs P_task lab in the window, on the real embedded model (pytest-qt, offscreen):
a small run fills the heatmap, the distance plot and P_result, lands in the run store, the
verdict follows edited thresholds, Stop keeps the steps, custom tasks load and save, bad input
is refused with the reason."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.labs.align.measures import Thresholds, measure_run, verdict
from app.labs.align.records import AlignRunRecord
from app.labs.align.task import PRESETS
from tests.widgets.factory import wait_saved


def _run(qtbot, window, timeout=300_000):
    with qtbot.waitSignal(window.controller.labs.finished, timeout=timeout) as blocker:
        window.align_panel.run_button.click()
    wait_saved(window, qtbot)
    return blocker.args


@pytest.fixture(scope="module", autouse=True)
def small(window):
    p = window.align_panel
    window.lab_tabs.setCurrentWidget(p)
    p.draws.setValue(5)
    p.runs.setValue(2)
    p.preset.setCurrentText("extreme")


def test_run_fills_the_plots_and_the_store(window, qtbot):
    p = window.align_panel
    summary, status = _run(qtbot, window)
    assert status == "done", p.status.text()
    res = p.results()
    steps, runs = res["steps"], res["runs"]
    assert [r["run"] for r in runs] == [0, 1] and steps
    hm = res["heatmap"]
    assert hm["outcomes"] == ["1", "2", "3", "4"] and list(hm["p_task"]) == pytest.approx([0.1, 0.7, 0.1, 0.1])
    assert hm["matrix"].shape == (len(steps), 4)
    for row, s in zip(hm["matrix"], steps):
        if s["p_token"][0] is not None:
            assert row == pytest.approx(s["p_token"]) and row.sum() == pytest.approx(1.0)
    dist = res["distance"]
    assert len(dist["tv"]) == len(steps) and dist["run_starts"][0] == 0 and len(dist["run_starts"]) == 2
    chart = res["result_chart"]
    draws = [d for r in runs for d in r["draws"]]
    if draws:
        expected = [draws.count(o) / len(draws) for o in ("1", "2", "3", "4")]
        assert list(chart["series"]["P_result"]) == pytest.approx(expected)
    assert summary.verdict.label in res["verdict"]
    exp = window.controller.store.load_experiment(window.controller.labs.experiment_id)
    assert exp.kind == "align" and exp.status == "done" and len(exp.records) == len(steps) + len(runs)
    # reopened from the history: the same heatmap
    p.start_results(PRESETS["flat"])
    window.open_lab_run(exp.id)
    assert p.task() == PRESETS["extreme"]
    again = p.results()["heatmap"]["matrix"]
    assert again.shape == hm["matrix"].shape and np.allclose(np.nan_to_num(again), np.nan_to_num(hm["matrix"]))
    # exports: the step table as CSV, one row per decision step
    import csv

    rows = list(csv.reader(open(window.export_lab_table(str(window.controller.store.path.parent / "a.csv")),
                                encoding="utf-8")))
    assert rows[0][:4] == ["run", "step", "drawn", "p_token[1]"] and len(rows) == len(steps) + 1
    # the verdict follows edited thresholds at once, from the same figures
    f = p.figures()
    assert math.isclose(f["mean_tv"], summary.verdict.mean_tv, rel_tol=1e-9)
    p.th_tv.setValue(1.0)
    p.th_variability.setValue(1.0)
    assert "E-model" in p.verdict_label.text()
    p.th_tv.setValue(0.0)
    p.th_variability.setValue(0.0)
    assert "D-model" in p.verdict_label.text() or f["mean_tv"] == 0
    p.th_tv.setValue(0.25)
    p.th_variability.setValue(0.15)


def test_stop_keeps_the_steps(window, qtbot):
    p = window.align_panel
    p.runs.setValue(5)
    labs = window.controller.labs
    try:
        with qtbot.waitSignal(labs.finished, timeout=300_000) as blocker:
            with qtbot.waitSignal(labs.record, timeout=120_000):
                p.run_button.click()
            window.stop_action.trigger()
    finally:
        p.runs.setValue(2)
    summary, status = blocker.args
    assert status == "stopped" and summary.cancelled is True
    # the runs go as parallel sequences: those in flight at the Stop are cut, each kept and marked
    runs = [r for r in labs.records if r.KIND == "run"]
    assert p.results()["steps"] and runs and any(r.cancelled for r in runs)
    assert summary.runs_done == len(runs) <= 5
    wait_saved(window, qtbot)
    assert window.controller.store.load_experiment(labs.experiment_id).status == "stopped"


def test_custom_task_files_and_bad_input(window, tmp_path):
    p, lab = window.align_panel, window.align_lab
    path = tmp_path / "colours.json"
    path.write_text(json.dumps({"name": "colours", "outcomes": {"red": 50, "blue": 30, "green": 20}}))
    assert lab.load_task(str(path))
    t = p.task()
    assert t.outcomes == ("red", "blue", "green") and t.probabilities == pytest.approx((0.5, 0.3, 0.2))
    assert "percent" in p.task_note.text().lower() or "100" in p.task_note.text()
    out = lab.save_task(str(tmp_path / "out.json"))
    assert json.loads(open(out).read())["outcomes"] == {"red": 0.5, "blue": 0.3, "green": 0.2}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert not lab.load_task(str(bad)) and "Not loaded" in p.status.text()
    assert p.task().outcomes == ("red", "blue", "green")  # nothing lost
    # a probability that is not a number, and a template with an unknown field
    p.task_table.item(0, 1).setText("lots")
    n = len(window.controller.store.list_experiments("align"))
    p.run_button.click()
    assert "not a number" in p.status.text() and len(window.controller.store.list_experiments("align")) == n
    p.preset.setCurrentText("extreme")
    assert p.task() == PRESETS["extreme"]
    p.template_edit.setPlainText("Draw {n} from {nope}:")
    p.run_button.click()
    assert "{nope}" in p.status.text() and not window.controller.labs.busy
    p.reset_template_button.click()
    assert "{distribution}" in p.template_edit.toPlainText()


def test_model_text_is_plain(window):
    p = window.align_panel
    p.start_results(PRESETS["extreme"])
    nan = math.nan
    p.add_record(AlignRunRecord(
        run=0, seed=1, style="completion", prompt="p", text="<b>2</b>, 3", draws=(), problems=(),
        p_result=(nan,) * 4, result_tv=None, result_kl=None, n_steps=0, n_undefined_steps=0, n_draws=0,
        mean_kl=nan, mean_js=nan, mean_tv=nan, mean_variability=nan, mean_max_prob=nan, mean_entropy=nan,
        mean_mass_outside=nan, mean_unseen_mass=nan, finish_reason="eos", cancelled=False, estimated=False,
        n_tokens=3, seconds=0.0, verdict=verdict(measure_run(PRESETS["extreme"], []), Thresholds())))
    assert "<b>2</b>, 3" in p.text_view.toPlainText()
    assert np.asarray(p.results()["heatmap"]["matrix"]).shape == (0, 4)
