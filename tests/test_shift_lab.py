"""Shift lab end to end: the exact numeric-answer enumeration (on a hand-built toy model, then
against a large sampled run on the embedded model), a small concept set and glubbing on the
embedded model, and the lab's typed records (they round-trip through their dict forms; the
dicts the lab stored before records were typed read into them). Kept small for 2 cores."""

from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np

from backends.llama_local import LOCAL_CAPABILITIES
import pytest

from tests.stored_forms import as_stored
from app.labs.shift.engine import (SAMPLE_SETTINGS, LocalShiftEngine, bare_number, exact_distribution,
                                        glub_record, iter_shift)
from app.labs.shift.glubbing import GlubSpec
from app.labs.shift.concepts import BUILTIN_CONCEPTS, render
from app.labs.shift.records import (RECORDS, ConceptRecord, GlubParams, GlubRecord, GlubSummary, ShiftParams,
                                    ShiftRunSummary)
from backends.base import SamplerSettings

REFERENCE = Path(__file__).resolve().parent / "data" / "runs-2026-12-02.sqlite3"


def _json(d: dict) -> str:
    return json.dumps(d, allow_nan=True)


def assert_round_trips(record) -> None:
    """``record`` comes back the same from its dict form, also after JSON (as the store keeps it)."""
    d = record.to_dict()
    assert d["schema"] == 1
    assert _json(type(record).from_dict(d).to_dict()) == _json(d)
    assert _json(type(record).from_dict(json.loads(_json(d))).to_dict()) == _json(d)

# ----------------------------------------------------------------------------- a toy model

VOCAB = ["<eos>", " ", "1", "2", ".", "5", " hours", "7%", " 3", "x"]
EOS = 0


class ToyBackend:
    """A logits engine whose next-token probabilities depend on the text so far, chosen so that
    the numeric answers' probabilities can be computed by hand."""

    n_ctx = 64
    n_vocab = len(VOCAB)
    capabilities = LOCAL_CAPABILITIES

    def __init__(self, table):
        self.table = table  # text generated so far -> {piece: probability}
        self.tokens: list[int] = []
        self.evaluations = 0
        self.info = type("Info", (), {"name": "toy"})()

    def tokenize(self, text, *, add_special=True, parse_special=False):
        return [9]  # the prompt: one token "x"

    def prepare(self, tokens):
        common = 0
        for a, b in zip(self.tokens, tokens):
            if a != b:
                break
            common += 1
        self.evaluations += len(tokens) - min(common, len(tokens) - 1)
        self.tokens = list(tokens)
        return common

    def logits(self):
        text = "".join(VOCAB[t] for t in self.tokens[1:])
        probs = self.table.get(text, {"<eos>": 1.0})
        out = np.full(self.n_vocab, -1e9, dtype=np.float32)
        for piece, p in probs.items():
            out[VOCAB.index(piece)] = math.log(p)
        return out

    def token_bytes(self, t, *, special=False):
        return b"" if t == EOS else VOCAB[t].encode()

    def piece(self, t):
        return VOCAB[t]

    def is_eog(self, t):
        return t == EOS


TABLE = {
    "": {" ": 0.5, "1": 0.2, "x": 0.2, " 3": 0.1},   # " " -> a numeral may follow; "x": not a number
    " ": {"2": 0.6, " ": 0.4},                          # two spaces: not a bare numeral
    " 2": {"<eos>": 0.5, ".": 0.5},                    # " 2" ends, or goes on with "."
    " 2.": {"5": 0.5, " hours": 0.5},                  # " 2.5" or " 2." + " hours" = 2
    " 2.5": {"<eos>": 1.0},
    "1": {"2": 0.5, "7%": 0.5},                        # "12" or "17%" (ends inside the token)
    "12": {" hours": 1.0},
    " 3": {"<eos>": 1.0},
}


def test_exact_distribution_on_a_toy_model_matches_the_hand_computed_tree():
    backend = ToyBackend(TABLE)
    engine = LocalShiftEngine(backend)
    s = SamplerSettings(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    d = exact_distribution(engine, "x", s, min_mass=0.0)
    expected = {2.0: 0.5 * 0.6 * (0.5 + 0.5 * 0.5), 2.5: 0.5 * 0.6 * 0.5 * 0.5, 12.0: 0.2 * 0.5,
                17.0: 0.2 * 0.5, 3.0: 0.1}
    assert dict(zip(d.values, d.probs)) == pytest.approx(expected)
    assert d.not_number == pytest.approx(0.2 + 0.5 * 0.4)
    assert d.pruned == pytest.approx(0.0, abs=1e-12)
    assert d.covered + d.not_number + d.pruned == pytest.approx(1.0)
    assert d.mean == pytest.approx(sum(v * p for v, p in expected.items()) / sum(expected.values()))
    # pruning: a branch below min_mass is not expanded and its mass is reported
    # (nodes " 3" 0.1, "12" 0.1 and " 2.5" 0.075 are below 0.15; "17%" is a leaf of the kept node "1")
    d2 = exact_distribution(engine, "x", s, min_mass=0.15)
    assert dict(zip(d2.values, d2.probs)) == pytest.approx({2.0: 0.15 + 0.075, 17.0: 0.1})
    assert d2.pruned == pytest.approx(0.1 + 0.1 + 0.075)
    # the sampler chain shapes the tree: greedy keeps only the most likely path
    g = exact_distribution(engine, "x", replace(s, temperature=0.0), min_mass=0.0)
    assert g.values == (2.0,) and g.probs == pytest.approx((1.0,))


@pytest.mark.parametrize("text, value", [(" 12 hours", 12.0), ("7", 7.0), (" 2.5", 2.5), (" 2. ", 2.0),
                                         ("  3", None), (" about 3", None), ("17%", 17.0), (".5", None)])
def test_bare_number_rule(text, value):
    assert bare_number(text) == value


# ----------------------------------------------------------------------------- the embedded model

@pytest.fixture(scope="module")
def engine(embedded_model):
    e = LocalShiftEngine.open(embedded_model, n_ctx=1024, n_threads=2)
    yield e
    e.close()


def test_exact_agrees_with_a_large_sampled_run(engine):
    concept = BUILTIN_CONCEPTS[0]
    prompt = render(concept, "sample", "completion")
    settings = replace(SAMPLE_SETTINGS, max_tokens=6, stop=())
    exact = engine.exact(prompt, settings, min_mass=1e-3, max_tokens=5)
    assert exact.covered + exact.not_number + exact.pruned == pytest.approx(1.0, abs=1e-6)
    n = 200
    values = [bare_number(engine.answer(prompt, settings, seed)) for seed in range(n)]
    not_number = sum(v is None for v in values) / n
    tol = lambda p: 4 * math.sqrt(max(p * (1 - p), 1e-4) / n) + exact.pruned  # noqa: E731
    assert abs(not_number - exact.not_number) <= tol(exact.not_number)
    top = sorted(zip(exact.probs, exact.values), reverse=True)[:5]
    for p, v in top:
        freq = sum(x == v for x in values) / n
        assert abs(freq - p) <= tol(p), (v, freq, p)


def test_small_concept_set_end_to_end(engine):
    concepts = BUILTIN_CONCEPTS[:2]
    records = []
    gen = iter_shift(engine, concepts, mode="exact", min_mass=5e-3)
    while True:
        try:
            records.append(next(gen))
        except StopIteration as stop:
            summary = stop.value
            break
    assert [r.concept_id for r in records] == [c.id for c in concepts]
    for r in records:
        for key in ("A", "I", "S"):
            d = r.exact(key)
            assert abs(sum(d.probs) - d.covered) < 1e-9 and d.covered > 0
            assert r.value(key) == pytest.approx(d.mean)
        if r.kept:
            assert r.alpha_hat == pytest.approx((r.A - r.S) * math.copysign(1, r.A - r.I) / abs(r.A - r.I))
        else:
            assert r.reason
    assert summary.n_total == 2 and summary.n_used + summary.n_dropped == 2
    assert summary.mode == "exact" and summary.cancelled is False
    # the typed records of the real model round-trip through their dict forms, which have the
    # keys of before (exact mode: no sampled-mode keys, no "interrupted")
    for r in (*records, summary):
        assert_round_trips(r)
    assert not {"A_answers", "A_parsed", "S_answers", "interrupted", "kind"} & set(records[0].to_dict())
    # sampled: the raw answers are kept beside their numbers
    gen = iter_shift(engine, concepts[:1], mode="sampled", samples=2)
    rec = next(gen)
    answers = rec.to_dict()["S_answers"]
    assert len(answers) == 2 and all("raw" in a and "value" in a for a in answers)
    assert rec.S_parsed == sum(a.value is not None for a in rec.S_answers)
    assert all(a.trace for a in rec.S_answers)  # a local answer is an openable generation
    assert not {"A_exact", "S_exact", "interrupted"} & set(rec.to_dict())
    assert_round_trips(rec)


def test_stop_keeps_finished_concepts(engine):
    import threading

    cancel = threading.Event()
    gen = iter_shift(engine, BUILTIN_CONCEPTS[:3], mode="exact", min_mass=5e-3, cancel=cancel)
    first = next(gen)
    cancel.set()
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert first.kept in (True, False) and stop.value.value.cancelled is True
    assert stop.value.value.n_total == 1


def test_glubbing_record_on_the_embedded_model(engine):
    rec = glub_record(engine, GlubSpec(valence="positive", n_examples=12, seed=4), mode="exact", min_mass=5e-3)
    assert rec.average > 0 and rec.ideal is not None
    assert rec.S_exact.covered > 0 and rec.shift == pytest.approx(rec.S - rec.average)
    assert_round_trips(rec)
    assert not {"S_answers", "kind"} & set(rec.to_dict())


# ----------------------------------------------------------------------------- stored before typing

def _reference_shift_run() -> tuple[dict, list[dict], dict]:
    """The params, records and summary of the concept-set run in the reference store (written by
    the app of 2026-12-02, before records were typed), as stored; read-only."""
    db = sqlite3.connect(f"file:{REFERENCE}?mode=ro", uri=True)
    try:
        (eid, params, summary), = db.execute("select id, params_json, summary_json from experiments "
                                             "where kind = 'shift'").fetchall()
        records = [json.loads(j) for (j,) in db.execute("select json from experiment_records where "
                                                         "experiment_id = ? order by idx", (eid,))]
    finally:
        db.close()
    return json.loads(params), records, json.loads(summary)


def _without_schema(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "schema"}


def test_a_concept_set_run_stored_before_typing_reads_into_the_typed_records():
    params, records, summary = _reference_shift_run()
    assert all("schema" not in d for d in (params, summary, *records))
    p = ShiftParams.from_dict(params)
    assert p.mode == "exact" and p.limit == 2 and [c.id for c in p.concepts] == [c.id for c in BUILTIN_CONCEPTS[:2]]
    assert p.settings.stop == ("\n",) and p.templates["sample/chat"].startswith("Think of")
    typed = [ConceptRecord.from_dict(d) for d in records]
    assert [r.index for r in typed] == [0, 1] and all(r.kept and r.S_exact is not None for r in typed)
    assert typed[0].A == pytest.approx(typed[0].A_exact.mean) and typed[0].A_answers is None
    s = ShiftRunSummary.from_dict(summary)
    assert s.n_total == 2 and s.dropped == () and s.model == "Gemma 3 270m"
    # the dict forms are the stored ones, key for key, plus "schema"
    assert as_stored(p.to_dict(), params) == params and as_stored(s.to_dict(), summary) == summary
    assert [as_stored(r.to_dict(), d) for r, d in zip(typed, records)] == records
    assert all(list(as_stored(r.to_dict(), d)) == list(d) for r, d in zip(typed, records))  # key order too


def test_the_lab_reads_a_run_with_the_types_of_its_kind():
    from app.core.store import Experiment

    params, records, summary = _reference_shift_run()
    exp = RECORDS.read_experiment(Experiment(2, "2026-12-02T00:00:00", "shift", "t", "m", None, None, "done",
                                             params, tuple(records), summary))
    assert isinstance(exp.params, ShiftParams) and isinstance(exp.summary, ShiftRunSummary)
    assert [type(r) for r in exp.records] == [ConceptRecord, ConceptRecord] and exp.problems == ()
    # a glubbing sweep of before (the shape glub_record, iter_glub and the presenter wrote), with
    # a sampled condition from a server (answers without a trace) and a dropped one (no number)
    knobs = {k: params[k] for k in ("mode", "samples", "temperature", "min_mass", "style", "seed", "limit",
                                    "templates")}
    glub_params = {**knobs, "mode": "sampled", "sweep": "mean", "means": [30.0, 60.0], "valences": ["positive"],
                   "base_mean": 45.0, "n_examples": 12, "shape": "unimodal"}
    base = {"valence": "positive", "spread": 15.0, "shape": "unimodal", "n_examples": 12, "seed": 0,
            "ideal_setting": None, "mode": "sampled"}
    glubs = [{"id": "glub-positive-unimodal-m30-s15-n12-seed0", **base, "mean": 30.0, "average": 29.5,
              "ideal": 52.0, "S_answers": [{"raw": " 40 hours", "value": 40.0, "error": None, "bare": 40.0}],
              "S": 40.0, "shift": 10.5, "index": 0},
             {"id": "glub-positive-unimodal-m60-s15-n12-seed0", **base, "mean": 60.0, "average": 61.0,
              "ideal": 80.5, "S_answers": [{"raw": " many", "value": None, "error": "no number", "bare": None}],
              "S": None, "shift": None, "index": 1}]
    glub_summary = {"mean_shift": {"positive": 10.5}, "n": {"positive": 1}, "cancelled": False}
    exp = RECORDS.read_experiment(Experiment(3, "2026-12-02T00:00:00", "glub", "t", "m", None, None, "done",
                                             glub_params, tuple(glubs), glub_summary))
    assert isinstance(exp.params, GlubParams) and exp.params.means == (30.0, 60.0)
    assert isinstance(exp.summary, GlubSummary) and exp.summary.mean_shift == {"positive": 10.5}
    assert exp.problems == () and [type(r) for r in exp.records] == [GlubRecord, GlubRecord]
    first, second = exp.records
    assert first.S_answers[0].trace is None and first.S_exact is None and second.S is None
    assert [_without_schema(r.to_dict()) for r in exp.records] == glubs  # no "trace": null, no "S_exact"
    assert as_stored(exp.params.to_dict(), glub_params) == glub_params
    assert as_stored(exp.summary.to_dict(), glub_summary) == glub_summary
