"""Verbalized Sampling lab end to end: the embedded model with the JSON-schema grammar, the seeded
draw and tau, the typed records of real runs (they round-trip through their dict forms; the
dict forms without a model are in ``test_vs_records``), ``samplescope vs --json`` headless, and
a remote run against llama-cpp-python's server. Kept small (2 cores): k <= 3, n <= 2, short
token limits."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.labs.vs.engine import (DEFAULT_SETTINGS, LocalVSEngine, RemoteVSEngine, compare, draw,
                                     model_distribution, run_vs_once, single_run_record)
from app.labs.vs.prompts import build_request
from app.labs.vs.records import ModelDistribution, VSRunRecord
from tests.test_vs_records import assert_round_trips

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = replace(DEFAULT_SETTINGS, max_tokens=110)


@pytest.fixture(scope="module")
def engine(embedded_model):
    e = LocalVSEngine(embedded_model, n_ctx=1024, n_threads=2)
    yield e
    e.close()


def test_seeded_draw_is_reproducible_and_tau_is_noted():
    p = [0.5, 0.3, 0.15, 0.05]
    assert [draw(p, s)[0] for s in range(20)] == [draw(p, s)[0] for s in range(20)]
    assert len({draw(p, s)[0] for s in range(50)}) > 1
    index, kept, notes = draw(p, 3, tau=0.2)
    assert kept == (0, 1) and index in kept and "removed 2 of 4" in notes[0]
    index, kept, notes = draw(p, 3, tau=0.9)
    assert index is None and kept == () and any("no candidate" in n for n in notes)
    assert draw(p, 3, tau=None)[2] == ()


def test_vs_comparison_on_the_embedded_model_every_answer_parses(engine):
    records = []
    result = compare(engine, "Name a US state.", "VS-Standard", k=3, n=2, settings=SETTINGS, seed=5,
                     on_record=records.append, direct_max_tokens=12, tau=0.2)
    assert [(r.arm, r.run) for r in records] == [("direct", 0), ("vs", 0), ("direct", 1), ("vs", 1)]
    assert all(isinstance(r, VSRunRecord) and r.counted for r in records)
    for out in result.vs:
        assert out.error is None and out.parsed is not None, out.raw
        assert len(out.parsed.candidates) == 3
        assert abs(sum(out.parsed.probabilities) - 1) < 1e-9
        assert out.parsed.source_format.startswith("json")
        removed = sum(q < 0.2 for q in out.parsed.probabilities)
        assert len(out.kept) == 3 - removed
        assert bool(removed) == any("tau" in n for n in out.notes)
    assert result.vs_metrics["parse_failure_rate"] == 0.0
    assert result.vs_metrics["n_samples"] == 6
    assert 0.0 <= result.vs_metrics["semantic_diversity"] <= 100.0
    assert set(result.ratios) >= {"semantic_diversity", "lexical_similarity", "distinct_1"}
    # the records are the outcomes' (the VS arm's, in run order), with the keys of before; they
    # and the summary round-trip through their dict forms
    vs_records = [r for r in records if r.arm == "vs"]
    assert [(r.raw, r.drawn_index, r.texts) for r in vs_records] == [(o.raw, o.drawn_index, o.parsed.texts)
                                                                     for o in result.vs]
    assert not {"interrupted", "model", "kind"} & set(records[1].to_dict())
    summary = result.summary("Gemma")
    assert summary.runs.vs == 2 and summary.model == "Gemma" and summary.vs["n_samples"] == 6
    for typed in (*records, summary):
        assert_round_trips(typed)
    # the same seeds give the same answers and draws: the runs went as parallel sequences, in the
    # same batches every time (a lone run of the same seed may differ by llama.cpp's batch noise)
    again = compare(engine, "Name a US state.", "VS-Standard", k=3, n=2, settings=SETTINGS, seed=5,
                    direct_max_tokens=12, tau=0.2)
    assert [(o.raw, o.drawn_index) for o in again.vs] == [(o.raw, o.drawn_index) for o in result.vs]
    assert [o.raw for o in again.direct] == [o.raw for o in result.direct]
    one = build_request("VS-Standard", "Name a US state.", 3)
    first, second = (run_vs_once(engine, one, SETTINGS, 5, tau=0.2) for _ in range(2))
    assert first.raw == second.raw and first.drawn_index == second.drawn_index
    # every answer is an inspectable trace: its steps, with the grammar stage
    (trace,) = result.vs[0].traces
    assert trace["finished"]["text"] == result.vs[0].raw and len(trace["steps"]) == trace["finished"]["n_tokens"]
    assert any(st["name"] == "grammar" for st in trace["steps"][0]["stages"])
    assert "grammar_p_before" in trace["steps"][0]


def test_continuation_logprob_and_embeddings(engine):
    lp = engine.continuation_logprob("Task: Name a US state.\nAnswer:", " Ohio")
    assert lp < 0 and math.isfinite(lp)
    dist = model_distribution(engine, "Name a US state.", ["Ohio", "Texas", "zqxv blorf"], stated=[0.2, 0.3, 0.5])
    assert isinstance(dist, ModelDistribution)
    assert abs(sum(dist.probabilities) - 1) < 1e-9 and dist.probabilities[2] < dist.probabilities[0]
    assert dist.logprobs[0] == pytest.approx(lp) and dist.kl_stated_to_model > 0.1
    # without stated probabilities there is no KL, and the dict form has no key for it
    bare = model_distribution(engine, "Name a US state.", ["Ohio", "Texas"])
    assert bare.kl_stated_to_model is None and set(bare.to_dict()) == {"logprobs", "probabilities"}
    emb = engine.embed(["Ohio", "Texas", "Ohio"])
    assert emb.shape[0] == 3 and np.allclose(emb[0], emb[2])


def test_a_single_run_record_has_what_the_model_does(engine):
    req = build_request("VS-Standard", "Name a US state.", 2)
    rec = single_run_record(engine, req, replace(SETTINGS, max_tokens=80), 4)
    assert (rec.arm, rec.run, rec.method) == ("vs", 0, "VS-Standard") and rec.counted
    assert rec.error is None or rec.cut, rec.raw
    if rec.error is None:  # a local model's readable answer: "what the model does" for each candidate
        assert rec.model is not None and len(rec.model.probabilities) == len(rec.candidates)
        assert rec.model.kl_stated_to_model is not None and rec.model.kl_stated_to_model >= 0
        assert set(rec.to_dict()["model"]) == {"logprobs", "probabilities", "kl_stated_to_model"}
    assert_round_trips(rec)
    cancel = threading.Event()
    cancel.set()  # a Stop before the answer: reported, marked, without the model's distribution
    cut = single_run_record(engine, req, replace(SETTINGS, max_tokens=80), 4, cancel=cancel)
    assert cut.interrupted and cut.model is None and not cut.counted
    assert cut.to_dict()["interrupted"] is True and "model" not in cut.to_dict()
    assert_round_trips(cut)


def test_free_text_and_sequence_methods_on_the_embedded_model(engine):
    seq = run_vs_once(engine, build_request("Sequence", "Name a US state.", 3), replace(SETTINGS, max_tokens=60), 2)
    assert seq.error is None and seq.parsed.source_format.startswith("json"), seq.raw
    assert any("uniform" in p for p in seq.parsed.problems)  # no stated probabilities: said so
    mt = run_vs_once(engine, build_request("Multi-turn", "Name a US state.", 2), replace(SETTINGS, max_tokens=8), 2)
    assert (mt.parsed is not None) != (mt.error is not None)
    direct = run_vs_once(engine, build_request("Direct", "Name a US state.", 3), replace(SETTINGS, max_tokens=8), 2)
    assert direct.parsed is None and (direct.samples == (direct.drawn,) or direct.error)


def test_cancel_stops_between_runs(engine):
    cancel = threading.Event()
    cancel.set()
    result = compare(engine, "Name a US state.", "VS-Standard", k=3, n=5, settings=SETTINGS, cancel=cancel)
    assert result.cancelled and not result.direct and not result.vs


class _StopAfter(threading.Event):
    """A cancel event that reports "set" from its n-th check on: a Stop pressed mid-answer,
    without timing."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.checks = n, 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks >= self.n or super().is_set()


def test_stop_inside_a_generation_returns_the_partial_answer(engine):
    long_settings = replace(SETTINGS, max_tokens=200, temperature=0.0)
    full = engine.generate(text="Count: 1, 2, 3,", settings=long_settings)
    cancel = _StopAfter(4)
    part = engine.generate(text="Count: 1, 2, 3,", settings=long_settings, cancel=cancel)
    assert cancel.checks == 4  # stopped after the 4th token, not at max_tokens
    assert part and full.startswith(part) and len(part) < len(full)


def test_stop_inside_a_comparison_reports_the_cut_run_but_does_not_count_it(engine):
    records = []
    cancel = _StopAfter(3)  # checked before the Direct run, then inside its tokens
    result = compare(engine, "Name a US state.", "VS-Standard", k=3, n=2, settings=SETTINGS,
                     cancel=cancel, on_record=records.append, direct_max_tokens=12)
    assert result.cancelled and not result.direct and not result.vs
    # the runs in flight (they run as parallel sequences) were cut: each is reported, in run
    # order, marked interrupted, and none is counted
    assert records and all(r.interrupted is True for r in records)
    assert (records[0].arm, records[0].run) == ("direct", 0)
    assert all(t["finished"]["reason"] == "cancelled" for r in records for t in r.traces)
    assert all(r.to_dict()["interrupted"] is True for r in records)
    for r in records:
        assert_round_trips(r)
    assert any("stopped" in n for n in result.notes)


def test_vs_cot_and_vs_multi_on_the_embedded_model(engine):
    cot = run_vs_once(engine, build_request("VS-CoT", "Name a colour.", 2), replace(SETTINGS, max_tokens=160),
                      seed=2)
    # the grammar puts "reasoning" first, then exactly k candidates; an answer parses unless the
    # token limit cut it (a 270M model can loop inside a JSON string, more or less often on
    # different processors), and then the error says so
    assert cot.raw.replace(" ", "").startswith('{"reasoning"')
    assert cot.error is None or (cot.cut and "ran out of tokens" in cot.error), cot.raw
    if cot.error is None:
        assert (len(cot.parsed.candidates) == 2 or cot.cut) and cot.drawn in cot.parsed.texts
    multi_req = build_request("VS-Multi", "Name a colour.", 4)
    assert multi_req.turns == 2 and multi_req.per_turn == 3
    multi = run_vs_once(engine, multi_req, SETTINGS, seed=3)
    # two turns, each held to the schema by the grammar
    assert multi.raw.count('"responses"') == 2
    assert multi.error is None or (multi.cut and "ran out of tokens" in multi.error), multi.raw
    if multi.error is None:
        # merged, each turn weighted 1/2: 3 + 3 candidates read (fewer from a cut turn), k = 4 asked
        assert abs(sum(multi.parsed.probabilities) - 1) < 1e-9
        assert len(multi.parsed.candidates) >= 4 or multi.cut


def test_cli_vs_json_on_the_embedded_model(embedded_model):
    cmd = [sys.executable, "-m", "app.cli", "vs", "--prompt", "Name a US state.", "--method", "VS-Standard",
           "--k", "2", "--n", "2", "--max-tokens", "80", "--direct-max-tokens", "10", "--seed", "3",
           "--threads", "2", "--n-ctx", "1024", "--reference", "us-states", "--json", "--model", str(embedded_model)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    records, summary = lines[:-1], lines[-1]["summary"]
    assert [r["arm"] for r in records] == ["direct", "vs", "direct", "vs"]
    assert all("drawn" in r and "seconds" in r for r in records)
    assert summary["runs"] == {"direct": 2, "vs": 2} and summary["k"] == 2 and summary["method"] == "VS-Standard"
    for arm in ("direct", "vs"):
        assert {"semantic_diversity", "lexical_similarity", "distinct_1", "distinct_2", "distinct_3",
                "parse_failure_rate", "precision", "coverage_n", "kl_to_reference"} <= set(summary[arm])
    # a grammar-held answer fails to parse only when the token limit cut it
    vs_records = [r for r in records if r["arm"] == "vs"]
    assert all(r["error"] is None or r["cut"] for r in vs_records), vs_records
    assert summary["vs"]["parse_failure_rate"] == sum(r["error"] is not None for r in vs_records) / 2
    assert "semantic_diversity" in summary["ratios"]


def test_remote_vs_run_against_the_llama_server(llama_server):
    from backends.openai_compat import OpenAICompatBackend

    backend = OpenAICompatBackend(llama_server.base_url, llama_server.model, read_timeout=120)
    engine = RemoteVSEngine(backend, backend.probe())
    try:
        req = build_request("VS-Standard", "Name a US state.", 2)
        out = run_vs_once(engine, req, replace(SETTINGS, max_tokens=80), 4)
        if engine.structured:
            # held to JSON by the server (it may be cut off by the token limit: then the parser
            # closes it after the last complete candidate and says so)
            assert out.error is None and out.parsed.source_format.startswith("json"), out.raw
            assert out.raw.lstrip().startswith("{")
        else:  # lenient parser: a failure is a counted, visible outcome
            assert (out.parsed is not None) != (out.error is not None)
        result = compare(engine, "Name a US state.", "VS-Standard", k=2, n=1,
                         settings=replace(SETTINGS, max_tokens=60), direct_max_tokens=8)
        assert len(result.direct) == len(result.vs) == 1
        if math.isnan(result.vs_metrics["semantic_diversity"]) and result.vs_metrics["n_samples"] >= 2:
            assert any("embeddings" in n or "semantic" in n for n in result.notes)
        # the fixture's server runs without embedding mode: a clear error, and compare notes it
        from backends.base import BackendError

        with pytest.raises(BackendError, match="no embeddings"):
            engine.embed(["Ohio", "Texas"])
        # without a verified response format the plain request goes through the lenient parser
        lenient = RemoteVSEngine(backend, None)
        assert not lenient.structured
        out = run_vs_once(lenient, build_request("VS-Standard", "Name a US state.", 2), replace(SETTINGS, max_tokens=40), 1)
        assert (out.parsed is not None) != (out.error is not None)
    finally:
        engine.close()
