"""The Verbalized Sampling lab's typed records (``app.labs.vs.records``), without a model: each
type round-trips through its dict form (also through the store's JSON), the dict forms are the
shapes the lab wrote before records were typed, key for key, and the runs stored then (the
reference store of 2026-12-02, and hand-built ones of that shape) read into the types."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from app.core.jsonsafe import json_safe
from app.core.records import Record, RecordError, plain
from app.core.store import Experiment
from app.labs.vs.records import (RECORDS, ModelDistribution, RunCounts, StatedCandidate, VSKnobs, VSParams,
                                 VSRunRecord, VSSummary)
from backends.base import SamplerSettings

REFERENCE = Path(__file__).resolve().parent / "data" / "runs-2026-12-02.sqlite3"


def _stored(d: dict) -> dict:
    """``d`` as the run store keeps it: JSON, with non-finite numbers as null."""
    return json.loads(json.dumps(json_safe(d)))


def assert_round_trips(record: Record) -> None:
    """``record`` comes back equal from its dict form, and the same from the store's JSON of it."""
    d = record.to_dict()
    assert d["schema"] == 1
    tp = type(record)
    assert tp.from_dict(d) == record
    assert tp.from_dict(d).to_dict() == d
    assert tp.from_dict(_stored(d)).to_dict() == _stored(d)


def _without_schema(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "schema"}


KNOBS = VSKnobs(prompt="Name a US state.", method="VS-Standard", k=2, t=None, tau=0.2, style="completion", n=2,
                max_tokens=110, direct_max_tokens=8, reference="us-states", template="Task: {prompt}\nJSON:\n",
                follow_up="", template_edited=False)


def _vs_record(**changes) -> VSRunRecord:
    base = VSRunRecord(
        arm="vs", run=1, method="VS-Standard", raw='{"responses": [{"text": "Ohio", "probability": 0.6}, '
        '{"text": "Texas", "probability": 0.2}]}', error=None, samples=("Ohio", "Texas"),
        candidates=(StatedCandidate("Ohio", 0.6, 0.75), StatedCandidate("Texas", 0.2, 0.25)),
        repairs=("weights normalised from sum 0.8",), problems=(), source_format="json", drawn="Ohio",
        drawn_index=0, kept=(0, 1), notes=(), seconds=0.412, seed=6, cut=False,
        traces=({"prompt": "Task", "steps": [], "finished": {"reason": "eos", "text": "{}"}},))
    return base.replace(**changes)


# ----------------------------------------------------------------------------- round trips

def test_every_record_type_round_trips_through_its_dict_form():
    settings = SamplerSettings(temperature=0.7, top_p=1.0, top_k=0, min_p=0.0, max_tokens=110, seed=5,
                               stop=("\n\n",), logit_bias=((7, -math.inf), ("Ohio", 1.5)))
    params = VSParams.of(KNOBS, "compare", settings)
    assert params.k == 2 and params.mode == "compare" and params.settings is settings
    summary = VSSummary(prompt="Name a US state.", method="VS-Standard", k=2, n=2, t=None, tau=0.2,
                        runs=RunCounts(2, 1), direct={"n_samples": 2.0, "semantic_diversity": None},
                        vs={"n_samples": 2.0, "semantic_diversity": 12.5}, ratios={"semantic_diversity": None},
                        cancelled=True, notes=("stopped after 2 Direct and 1 VS-Standard runs",),
                        reference="us-states", model="Gemma 3 270m")
    records = [
        _vs_record(),
        _vs_record(arm="direct", run=0, method="Direct", raw=" Ohio", samples=("Ohio",), candidates=(), repairs=(),
                   source_format=None, kept=(0,), traces=()),
        _vs_record(error="the answer is not JSON (the answer ran out of tokens ...)", samples=(), candidates=(),
                   repairs=(), source_format=None, drawn=None, drawn_index=None, kept=(), cut=True),
        _vs_record(interrupted=True),
        _vs_record(run=0, model=ModelDistribution((-1.5, -2.5), (0.731, 0.269), 0.0012)),
        _vs_record(run=0, model=ModelDistribution((-1.5, -2.5), (0.731, 0.269))),
    ]
    for typed in (params, summary, *records):
        assert_round_trips(typed)
    # the sampler settings are written as SamplerSettings writes them: a banned token survives JSON
    assert params.to_dict()["settings"] == settings.to_dict()
    assert VSParams.from_dict(_stored(params.to_dict())).settings.logit_bias == ((7, -math.inf), ("Ohio", 1.5))
    # keys only some runs have are written only for them, as before
    plain_run, direct, failed, cut, with_model, without_kl = (r.to_dict() for r in records)
    assert not {"interrupted", "model", "kind"} & set(plain_run)
    assert cut["interrupted"] is True and with_model["model"]["kl_stated_to_model"] == 0.0012
    assert set(without_kl["model"]) == {"logprobs", "probabilities"}
    assert plain_run["candidates"] == [{"text": "Ohio", "stated": 0.6, "probability": 0.75},
                                       {"text": "Texas", "stated": 0.2, "probability": 0.25}]
    assert direct["source_format"] is None and failed["drawn_index"] is None
    assert summary.to_dict()["runs"] == {"direct": 2, "vs": 1}
    # what the panel and the CLI read off them
    assert records[0].texts == ("Ohio", "Texas") and records[0].probabilities == (0.75, 0.25)
    assert records[0].counted and not records[3].counted
    # plain data: the records' dict forms
    assert plain([records[0]]) == [plain_run] and plain(KNOBS)["template_edited"] is False


def test_a_record_that_does_not_fit_is_refused_with_its_field():
    d = _vs_record().to_dict()
    with pytest.raises(RecordError, match="arm"):
        VSRunRecord.from_dict({**d, "arm": "both"})
    with pytest.raises(RecordError, match="candidates"):
        VSRunRecord.from_dict({**d, "candidates": [{"text": "Ohio"}]})
    with pytest.raises(RecordError, match="newer version"):
        VSRunRecord.from_dict({**d, "schema": 2})
    with pytest.raises(RecordError, match="mode"):
        VSParams.from_dict({**VSParams.of(KNOBS, "once", SamplerSettings()).to_dict(), "mode": "sweep"})


# ----------------------------------------------------------------------------- stored before typing

def _reference_vs_run() -> tuple[dict, list[dict], dict | None]:
    """The params, records and summary of the VS run in the reference store (a "Run once" written
    by the app of 2026-12-02, before records were typed), as stored; read-only."""
    db = sqlite3.connect(f"file:{REFERENCE}?mode=ro", uri=True)
    try:
        (eid, params, summary), = db.execute("select id, params_json, summary_json from experiments "
                                             "where kind = 'vs'").fetchall()
        records = [json.loads(j) for (j,) in db.execute("select json from experiment_records where "
                                                         "experiment_id = ? order by idx", (eid,))]
    finally:
        db.close()
    return json.loads(params), records, None if summary is None else json.loads(summary)


def test_a_single_run_stored_before_typing_reads_into_the_typed_records():
    params, records, summary = _reference_vs_run()
    assert all("schema" not in d for d in (params, *records)) and summary is None
    p = VSParams.from_dict(params)
    assert (p.mode, p.method, p.k, p.t, p.tau, p.reference) == ("once", "VS-Standard", 5, None, None, "us-states")
    assert p.settings.seed == 7 and p.settings.max_tokens == 256 and p.template.startswith("Task: {prompt}")
    # the dict form is the stored one, key for key (the settings as this version writes them: the
    # stored ones, with the sampler fields added since at their defaults)
    d = _without_schema(p.to_dict())
    assert {k: v for k, v in d.items() if k != "settings"} == {k: v for k, v in params.items() if k != "settings"}
    assert {k: d["settings"][k] for k in params["settings"]} == params["settings"]
    (rec,) = (VSRunRecord.from_dict(r) for r in records)
    assert (rec.arm, rec.run, rec.drawn_index, rec.seed) == ("vs", 0, 2, 7) and rec.counted
    assert rec.texts == ("I",) * 5 and rec.candidates[1].stated == 1.0 and len(rec.traces) == 1
    assert rec.model is not None and rec.model.kl_stated_to_model == pytest.approx(0.38336, abs=1e-5)
    assert _without_schema(rec.to_dict()) == records[0]
    exp = RECORDS.read_experiment(Experiment(1, "2026-12-02T00:00:00", "vs", "t", "m", None, None, "done",
                                             params, tuple(records), summary))
    assert isinstance(exp.params, VSParams) and exp.summary is None and exp.problems == ()
    assert exp.records == (rec,)


def test_a_comparison_stored_before_typing_reads_into_the_typed_records():
    """A comparison of before, in the shapes the engine and the presenter wrote then: a Direct
    run, a VS run a Stop cut (``interrupted``) and the summary (``Comparison.summary`` with the
    model; undefined metrics null)."""
    params, _records, _summary = _reference_vs_run()
    params = {**params, "mode": "compare", "n": 2, "t": 0.1, "tau": 0.2}
    direct = {"arm": "direct", "run": 0, "method": "Direct", "raw": " Ohio\n", "error": None, "samples": ["Ohio"],
              "candidates": [], "repairs": [], "problems": [], "source_format": None, "drawn": "Ohio",
              "drawn_index": 0, "kept": [0], "notes": [], "seconds": 0.21, "seed": 7, "cut": False, "traces": []}
    stopped = {"arm": "vs", "run": 0, "interrupted": True, "method": "VS-Standard", "raw": '{"responses": [',
               "error": "the answer is not JSON", "samples": [], "candidates": [], "repairs": [], "problems": [],
               "source_format": None, "drawn": None, "drawn_index": None, "kept": [], "notes": [], "seconds": 0.05,
               "seed": 7, "cut": False, "traces": []}
    metrics = {"n_samples": 1.0, "semantic_diversity": None, "lexical_similarity": 0.0, "distinct_1": 1.0,
               "distinct_2": 0.0, "distinct_3": 0.0, "parse_failure_rate": 0.0, "precision": 1.0, "coverage_n": 0.02,
               "kl_to_reference": 3.5}
    summary = {"prompt": "Name a US state.", "method": "VS-Standard", "k": 5, "n": 2, "t": 0.1, "tau": 0.2,
               "runs": {"direct": 1, "vs": 0}, "direct": metrics, "vs": {**metrics, "n_samples": 0.0},
               "ratios": {"semantic_diversity": None, "distinct_1": None}, "cancelled": True,
               "notes": ["stopped after 1 Direct and 0 VS-Standard runs"], "reference": "us-states",
               "model": "Gemma 3 270m"}
    exp = RECORDS.read_experiment(Experiment(5, "2026-12-02T00:00:00", "vs", "t", "m", None, None, "stopped",
                                             params, (direct, stopped), summary))
    assert exp.problems == () and isinstance(exp.params, VSParams) and exp.params.mode == "compare"
    assert isinstance(exp.summary, VSSummary) and [type(r) for r in exp.records] == [VSRunRecord, VSRunRecord]
    first, second = exp.records
    assert first.counted and first.source_format is None and second.interrupted and second.drawn is None
    s = exp.summary
    assert s.runs == RunCounts(1, 0) and s.direct["semantic_diversity"] is None and s.vs["n_samples"] == 0.0
    assert s.ratios == {"semantic_diversity": None, "distinct_1": None} and s.cancelled and s.t == 0.1
    assert [_without_schema(r.to_dict()) for r in exp.records] == [direct, stopped]
    assert _without_schema(s.to_dict()) == summary
    for typed in (*exp.records, s):
        assert_round_trips(typed)
