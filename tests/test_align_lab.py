"""P_token vs P_task lab end to end: local runs on the embedded model (P_token checked against an
independent computation, prefix outcomes with their end, reproducibility, streamed records,
cancel, chat style), the remote estimate against llama-cpp-python's server, and
``samplescope align --json`` headless. Kept small (2 cores): <= 8 draws, <= 2 runs, one thread."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.core.jsonsafe import json_safe
from app.core.records import plain
from app.core.store import RunStore
from app.labs.align.measures import VERDICT_LABELS, Thresholds
from app.labs.align.measures import summary as summary_of_measures
from app.labs.align.records import RECORDS, AlignParams, AlignRunRecord, AlignStepRecord, AlignSummary
from app.labs.align.task import (PRESETS, decision_sequences, ends_item, in_context_tokenizer, make_task,
                                 parse_draws, render_prompt)
from app.labs.align.engine import (DEFAULT_SETTINGS, _RemoteDecision, default_max_tokens, iter_align,
                                        local_run, remote_run)
from backends.base import Step, TokenAlt
from tests.stored_forms import as_stored

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "runs-2026-12-02.sqlite3"  # written by the app of 2026-12-02
EXTREME = PRESETS["extreme"]
WARM = DEFAULT_SETTINGS.replace(temperature=0.7)
GREEDY = DEFAULT_SETTINGS.replace(temperature=0.0)


@pytest.fixture(scope="module")
def backend(embedded_model):
    # one thread: with other jobs on the 2 cores, llama.cpp's two-thread barrier is slower by far
    from backends.llama_local import LlamaCppBackend

    b = LlamaCppBackend(embedded_model, n_ctx=512, n_threads=1)
    yield b
    b.close()


def _drain(gen):
    records = []
    while True:
        try:
            records.append(next(gen))
        except StopIteration as stop:
            return records, stop.value


def _softmax(logits) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def _by_hand(backend, prompt_tokens, seq, end_mask=None) -> float:
    """P(seq | prompt) (times P(end) after it) from separate prepare calls, starting fresh."""
    backend.reset()
    p = 1.0
    for j, tok in enumerate(seq):
        backend.prepare(list(prompt_tokens) + list(seq[:j]))
        p *= float(_softmax(backend.logits())[tok])
    if end_mask is not None:
        backend.prepare(list(prompt_tokens) + list(seq))
        p *= float(_softmax(backend.logits())[end_mask].sum())
    return p


def _check_steps(run) -> None:
    assert run.steps, run.text
    for s in run.steps:
        assert 0.0 <= s.mass_outside <= 1.0 and 0.0 <= s.unseen_mass <= 1.0
        if s.defined:
            assert math.fsum(s.p_token) == pytest.approx(1.0, abs=1e-9)
            assert math.fsum(s.p_outcomes) + s.mass_outside == pytest.approx(1.0, abs=1e-9)
        else:
            assert all(math.isnan(x) for x in s.p_token) and s.mass_outside == 1.0


def test_extreme_run_p_token_sums_to_one_and_matches_an_independent_computation(backend):
    run = local_run(backend, EXTREME, 6, WARM, seed=2)
    _check_steps(run)
    assert 1 <= len(run.steps) <= 6 and run.finish_reason in ("draws", "eos", "length")
    assert [s.index for s in run.steps] == list(range(len(run.steps)))
    assert run.steps[0].position == 0 and not run.estimated and not run.cancelled
    # the items are the text cut at the steps; the draws are the text parsed
    assert "".join(s.item for s in run.steps) == run.text
    assert list(run.draws) == parse_draws(run.text, EXTREME)[0] and len(run.draws) >= 3, run.text
    for s in run.steps:
        items = parse_draws(s.item, EXTREME)
        assert s.drawn == (items[0][0] if len(items[0]) == 1 and not items[1] else None)
    assert run.measures.n_steps == len(run.steps) and run.measures.draws == run.draws

    # step 0 by hand: a fresh prompt evaluation, softmax, each sequence's tokens multiplied
    prompt_tokens = backend.tokenize(render_prompt(EXTREME, 6), add_special=True)
    seqs = decision_sequences(EXTREME, in_context_tokenizer(lambda t: backend.tokenize(t, add_special=False)))
    assert any(len(s.tokens) > 1 for s in seqs)  # " 2" is " " then "2": the KV cache is used
    hand = {o: 0.0 for o in EXTREME.outcomes}
    for s in seqs:
        hand[s.outcome] += _by_hand(backend, prompt_tokens, s.tokens)
    total = sum(hand.values())
    np.testing.assert_allclose(run.steps[0].p_outcomes, [hand[o] for o in EXTREME.outcomes], atol=1e-5)
    np.testing.assert_allclose(run.steps[0].p_token, [hand[o] / total for o in EXTREME.outcomes], atol=1e-5)
    assert run.steps[0].mass_outside == pytest.approx(1 - total, abs=1e-5)


def test_prefix_outcomes_are_scored_with_the_probability_that_the_item_ends(backend):
    task = make_task("prefix", {"1": 0.5, "10": 0.5})
    run = local_run(backend, task, 2, WARM, seed=1)
    _check_steps(run)
    tokenize = in_context_tokenizer(lambda t: backend.tokenize(t, add_special=False))
    seqs = decision_sequences(task, tokenize)
    assert {s.outcome for s in seqs if s.needs_end} == {"1"}
    end = np.array([backend.is_eog(t) or ends_item(backend.token_bytes(t).decode("utf-8", errors="replace"))
                    for t in range(backend.n_vocab)])
    plain = lambda t: backend.tokenize(t, add_special=False)  # noqa: E731
    assert end[plain(",")[0]] and end[plain("\n")[0]] and not end[plain("0")[0]] and end[backend.info.eos_token]
    prompt_tokens = backend.tokenize(render_prompt(task, 2), add_special=True)
    hand = {o: 0.0 for o in task.outcomes}
    for s in seqs:
        hand[s.outcome] += _by_hand(backend, prompt_tokens, s.tokens, end if s.needs_end else None)
    np.testing.assert_allclose(run.steps[0].p_outcomes, [hand["1"], hand["10"]], atol=1e-5)


def test_the_generation_is_a_plain_sessions_and_a_seed_repeats_it(backend):
    from app.core.session import GenerationSession

    a = local_run(backend, EXTREME, 5, WARM, seed=11)
    b = local_run(backend, EXTREME, 5, WARM, seed=11)
    assert a.text == b.text and a.draws == b.draws
    assert [s.p_token for s in a.steps] == [s.p_token for s in b.steps]
    # scoring moves the KV cache and puts it back: the text is what the sampler alone writes
    backend.reset()
    plain = GenerationSession(backend, render_prompt(EXTREME, 5), WARM.replace(seed=11, max_tokens=a.n_tokens))
    text = "".join(st.token for st in plain.run() if isinstance(st, Step))
    assert text == a.text
    assert default_max_tokens(5) == 46 and a.n_tokens <= 46


def _nan_json(value) -> str:
    """``value`` as JSON text with NaN written as NaN: equal texts, equal records (NaN != NaN)."""
    return json.dumps(value, allow_nan=True, sort_keys=True)


def _stored(record):
    """``record`` as the store keeps it and gives it back: its dict form, NaN as null."""
    return json.loads(json.dumps(json_safe(record.to_dict()), allow_nan=False))


def test_iter_align_streams_step_and_run_records_in_order_and_summarises(backend):
    th = Thresholds(max_mean_tv=0.3, max_variability=0.2, warn_mass_outside=0.6)
    records, summary = _drain(iter_align(backend, EXTREME, 4, runs=2, settings=WARM, seed=5, thresholds=th))
    json.dumps(json_safe([r.to_dict() for r in records] + [summary.to_dict()]), allow_nan=False)  # JSON-ready
    kinds = [(r.run, r.KIND) for r in records]
    run_at = [i for i, r in enumerate(records) if isinstance(r, AlignRunRecord)]
    assert len(run_at) == 2 and run_at[1] == len(records) - 1
    assert all(k == (0, "step") for k in kinds[:run_at[0]]) and all(k == (1, "step") for k in kinds[run_at[0] + 1:-1])
    for r_index, (lo, hi) in enumerate(((0, run_at[0]), (run_at[0] + 1, run_at[1]))):
        steps, run = records[lo:hi], records[hi]
        assert [s.step for s in steps] == list(range(len(steps))) == list(range(run.n_steps))
        assert run.seed == 5 + r_index and run.estimated is False and run.cancelled is False
        assert run.verdict.label in VERDICT_LABELS and len(run.p_result) == 4
        for s in steps:
            assert isinstance(s, AlignStepRecord)
            assert set(s.to_dict()) >= {"p_token", "mass_outside", "unseen_mass", "drawn", "kl", "js", "tv",
                                        "tv_prev", "max_prob", "entropy", "estimated", "item"}
            assert s.estimated is False and s.unseen_mass == 0.0 and 0 <= s.mass_outside <= 1
            assert (s.tv_prev is None) == (s.step == 0)
            if not math.isnan(s.p_token[0]):
                assert sum(s.p_token) == pytest.approx(1.0) and 0 <= s.tv <= 1
                assert s.max_prob == pytest.approx(max(s.p_token))
    # run r uses seed + r
    assert records[run_at[1]].text == local_run(backend, EXTREME, 4, WARM, seed=6).text
    assert summary.verdict.label in VERDICT_LABELS and summary.verdict.reasons
    assert plain(summary.thresholds) == {"max_mean_tv": 0.3, "max_variability": 0.2, "warn_mass_outside": 0.6}
    assert summary.verdict.thresholds == summary.thresholds
    assert summary.cancelled is False and summary.runs_done == 2 and len(summary.runs) == 2
    assert summary.estimated is False and summary.backend == "local"
    assert summary.task.outcomes == {"1": 0.1, "2": 0.7, "3": 0.1, "4": 0.1}

    # the typed records round-trip through their dict forms, directly and as the store keeps them
    for rec in records + [summary]:
        assert _nan_json(type(rec).from_dict(rec.to_dict()).to_dict()) == _nan_json(rec.to_dict())
        assert _nan_json(type(rec).from_dict(_stored(rec)).to_dict()) == _nan_json(rec.to_dict())
        assert rec.to_dict()["schema"] == 1
    for rec in records:
        assert _nan_json(RECORDS.read_record(_stored(rec)).to_dict()) == _nan_json(rec.to_dict())
    assert RECORDS.read_summary(_stored(summary)) == summary
    assert "trace" in records[-1].to_dict() and records[-1].trace["prompt"] == records[-1].prompt
    # the summary's first keys are measures.summary's, key for key
    whole = json_safe(summary.to_dict())
    parts = summary_of_measures([local_run(backend, EXTREME, 4, WARM, seed=5 + r).measures for r in range(2)], th)
    assert {k: whole[k] for k in parts} == parts


def test_cancel_after_k_steps_keeps_them_and_starts_no_further_run(backend):
    cancel = threading.Event()
    gen = iter_align(backend, EXTREME, 8, runs=2, settings=GREEDY, seed=0, cancel=cancel)
    records = []
    while True:
        try:
            r = next(gen)
        except StopIteration as stop:
            summary = stop.value
            break
        records.append(r)
        if sum(x.KIND == "step" for x in records) == 2:
            cancel.set()
    assert [r.KIND for r in records] == ["step", "step", "run"]
    run = records[-1]
    assert run.cancelled is True and run.finish_reason == "cancelled" and run.n_steps == 2
    assert summary.cancelled is True and summary.runs_done == 1 and summary.runs_requested == 2
    assert summary.runs[0].n_steps == 2
    # cancelled before anything: no record, an undetermined verdict
    records, summary = _drain(iter_align(backend, EXTREME, 4, runs=2, settings=GREEDY, cancel=cancel))
    assert records == [] and summary.runs == () and summary.verdict.label == "undetermined"
    assert summary.cancelled is True and summary.runs_done == 0
    assert _nan_json(AlignSummary.from_dict(_stored(summary)).to_dict()) == _nan_json(summary.to_dict())
    # the backend is still usable
    assert local_run(backend, EXTREME, 2, GREEDY).steps


def test_chat_style_needs_the_models_chat_template(backend, monkeypatch):
    with pytest.raises(ValueError, match="chat template"):
        local_run(backend, EXTREME, 3, WARM, style="chat")
    from backends.llama_local import apply_chat_template

    monkeypatch.setattr(backend, "format_chat", lambda messages: apply_chat_template("gemma", messages))
    run = local_run(backend, EXTREME, 3, WARM, seed=0, style="chat", max_tokens=20)
    _check_steps(run)
    assert run.steps[0].position == 0 and run.style == "chat" and run.n_tokens <= 20
    turn = backend.tokenize("<start_of_turn>", add_special=False, parse_special=True)
    assert len(turn) == 1 and turn[0] in backend.cached_tokens  # the template's control tokens, not text


def test_bad_arguments_are_value_errors_before_any_record(backend):
    with pytest.raises(ValueError, match="runs"):
        next(iter_align(backend, EXTREME, 4, runs=0))
    with pytest.raises(ValueError, match="draws"):
        next(iter_align(backend, EXTREME, 0))
    with pytest.raises(ValueError, match="style"):
        local_run(backend, EXTREME, 3, style="poem")
    with pytest.raises(ValueError, match="seed"):
        next(iter_align(backend, EXTREME, 3, runs=2, seed=2**32 - 1))


# ---------------------------------------------------------------------------- remote


def _step(piece: str, p: float, top: list[tuple[str, float]]) -> Step:
    alts = tuple(TokenAlt(None, t, q, q) for t, q in top)
    return Step(index=0, position=0, token_id=None, token=piece, piece=piece, p_raw=p, p_final=p, rank=1,
                entropy_raw=0.0, entropy_final=0.0, kl_final_raw=0.0, top=alts, estimated=True,
                unseen_mass=max(0.0, 1 - sum(q for _, q in top)))


def test_remote_scoring_follows_the_drawn_prefix_and_counts_the_unseen_mass():
    # the model drew " " (a prefix of " 2" but no outcome): the next token's top-N is conditioned on it
    d = _RemoteDecision(EXTREME, 0, 0)
    assert d.feed(_step(" ", 0.5, [(" ", 0.5), ("2", 0.2), ("x", 0.2)])) is False
    assert d.feed(_step("2", 0.6, [("2", 0.6), ("1", 0.3)])) is True
    p, raw, mass, unseen = d.result()
    assert raw == pytest.approx((0.5 * 0.3, 0.2 + 0.5 * 0.6, 0.0, 0.0))
    assert unseen == pytest.approx(0.1 + 0.5 * 0.1) and mass == pytest.approx(1 - 0.65)
    assert sum(p) == pytest.approx(1.0)
    # a drawn token that is an outcome ends the step at once; a text-only step is undefined
    d = _RemoteDecision(EXTREME, 0, 0)
    assert d.feed(_step(" 3", 0.9, [(" 3", 0.9), (" 1", 0.05)])) is True
    assert d.result()[1] == pytest.approx((0.05, 0.0, 0.9, 0.0))
    d = _RemoteDecision(EXTREME, 0, 0)
    assert d.feed(_step("2", 0.0, [])) is True
    p, raw, mass, unseen = d.result()
    assert all(math.isnan(x) for x in p) and mass == 1.0 and unseen == 1.0 and d.no_logprobs


def test_remote_run_is_estimated_and_agrees_with_the_local_model(remote, backend):
    records, summary = _drain(iter_align(remote, EXTREME, 4, runs=1, settings=GREEDY, seed=1, max_tokens=16))
    steps, run = records[:-1], records[-1]
    assert run.KIND == "run" and run.estimated is True and summary.estimated is True
    assert summary.backend == "remote" and steps
    for s in steps:
        assert s.estimated is True and 0.0 <= s.unseen_mass <= 1.0
        assert s.unseen_mass <= s.mass_outside + 1e-9 <= 1.0 + 1e-9
        if not math.isnan(s.p_token[0]):
            assert sum(s.p_token) == pytest.approx(1.0)
    # a remote run has no generation to open: its dict form has no trace, as before
    assert run.trace is None and "trace" not in run.to_dict()
    assert _nan_json(AlignRunRecord.from_dict(_stored(run)).to_dict()) == _nan_json(run.to_dict())
    # greedy on both sides: the same list, and step 0 within the server's float noise
    local = local_run(backend, EXTREME, 4, GREEDY, seed=1, max_tokens=16)
    assert run.text == local.text and run.draws == local.draws
    # the server evaluates the prompt after whatever prefix it still holds, in other batch shapes:
    # llama.cpp's batching noise, which differs by processor (measured largest difference 0.004 on
    # an AVX-512 build, 0.011 on an AVX2-only build; the bound leaves room for others)
    np.testing.assert_allclose(steps[0].p_outcomes, local.steps[0].p_outcomes, atol=0.05)
    assert int(np.argmax(steps[0].p_outcomes)) == int(np.argmax(local.steps[0].p_outcomes))
    direct = remote_run(remote, EXTREME, 2, GREEDY, seed=1, max_tokens=8)
    assert direct.estimated and direct.steps and direct.finish_reason in ("draws", "length")


# ---------------------------------------------------------------------------- CLI


def test_cli_align_json_on_the_embedded_model(embedded_model):
    cmd = [sys.executable, "-m", "app.cli", "align", "--preset", "flat", "--draws", "4", "--runs", "1", "--json",
           "--seed", "3", "--threads", "1", "--n-ctx", "512", "--threshold-tv", "0.4", "--model", str(embedded_model)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    records, summary = lines[:-1], lines[-1]["summary"]
    assert records and [r["kind"] for r in records][-1] == "run"
    assert all(r["kind"] == "step" and len(r["p_token"]) == 9 for r in records[:-1])
    assert [r["step"] for r in records[:-1]] == list(range(len(records) - 1))
    assert summary["verdict"]["label"] in VERDICT_LABELS
    assert summary["thresholds"]["max_mean_tv"] == 0.4 and summary["task"]["name"] == "flat"
    assert summary["runs_done"] == 1 and summary["model"]


def test_cli_align_refuses_bad_input_with_exit_2(tmp_path, capsys):
    assert main(["align", "--draws", "0"]) == 2
    assert "draws" in capsys.readouterr().err
    assert main(["align", "--runs", "0"]) == 2
    assert "--runs" in capsys.readouterr().err
    assert main(["align", "--threshold-variability", "1.5"]) == 2
    assert "max_variability" in capsys.readouterr().err
    bad = tmp_path / "task.json"
    bad.write_text('{"outcomes": {"a": 0.5, "b": 0.2}}', encoding="utf-8")
    assert main(["align", "--task", str(bad)]) == 2
    assert "sum" in capsys.readouterr().err
    assert main(["align", "--template", "{n} draws of {colour}"]) == 2
    assert "{colour}" in capsys.readouterr().err
    # chat style on a base model: said after loading it, still a usage error
    assert main(["align", "--style", "chat", "--draws", "2", "--runs", "1", "--threads", "1", "--n-ctx", "256"]) == 2
    assert "chat template" in capsys.readouterr().err
    assert main(["align", "--model", str(tmp_path / "missing.gguf"), "--draws", "2"]) == 1


def test_runs_as_parallel_sequences_keep_run_order_and_repeat(backend):
    """Three runs as parallel sequences of one batched context: records in run order, each run
    seeded seed + r, the same set again gives the same texts, and each run agrees with a lone
    run of its seed up to llama.cpp's batch noise (step 0's P_token; measured differences
    below 0.01, bound 0.05)."""
    args = dict(runs=3, settings=WARM, seed=7)
    records, summary = _drain(iter_align(backend, EXTREME, 3, max_parallel=3, **args))
    kinds = [(r.run, r.KIND) for r in records]
    assert kinds == sorted(kinds, key=lambda k: (k[0], k[1] == "run"))  # run 0's records, then run 1's, ...
    runs = [r for r in records if isinstance(r, AlignRunRecord)]
    assert [r.seed for r in runs] == [7, 8, 9] and summary.runs_done == 3
    again, _ = _drain(iter_align(backend, EXTREME, 3, max_parallel=3, **args))
    assert [r.text for r in again if isinstance(r, AlignRunRecord)] == [r.text for r in runs]
    for r in (0, 2):
        lone = local_run(backend, EXTREME, 3, WARM, seed=7 + r)
        first = next(x for x in records if x.run == r and isinstance(x, AlignStepRecord))
        np.testing.assert_allclose(first.p_outcomes, lone.steps[0].p_outcomes, atol=0.05)


# ---------------------------------------------------------------------------- stored shapes


def test_a_run_stored_before_records_were_typed_reads_into_the_typed_records(tmp_path):
    """The reference store's align run (dicts without "schema") reads as schema 1, every record
    of its type, and the typed values write the same dicts back (plus "schema")."""
    path = tmp_path / "runs.sqlite3"
    path.write_bytes(REFERENCE.read_bytes())  # opening may migrate: never the reference itself
    store = RunStore(path)
    try:
        (head,) = [h for h in store.list_experiments() if h.kind == "align"]
        exp = store.load_experiment(head.id)
    finally:
        store.close()
    assert "schema" not in exp.params and all("schema" not in r for r in exp.records)
    typed = RECORDS.read_experiment(exp)
    assert typed.problems == ()
    assert isinstance(typed.params, AlignParams) and isinstance(typed.summary, AlignSummary)
    assert [type(r) for r in typed.records] == [AlignStepRecord] * 5 + [AlignRunRecord]
    p = typed.params
    assert (p.draws, p.runs, p.style, p.seed) == (5, 1, "completion", 0) and p.task.distribution() == EXTREME
    assert p.thresholds == Thresholds() and p.settings == DEFAULT_SETTINGS.replace(seed=42)
    first, run = typed.records[0], typed.records[-1]
    assert first.tv_prev is None and first.drawn is None and first.item == " 1 in a row,"
    assert run.result_tv is None and all(math.isnan(x) for x in run.p_result) and run.verdict.label == "D-model"
    assert run.trace is not None and run.trace["model"] == "Gemma 3 270m"
    assert typed.summary.diversity_across_runs is None and typed.summary.runs[0].steps[0].tv_to_previous is None

    def without_schema(d):
        assert d.pop("schema") == 1
        return d

    assert as_stored(json_safe(without_schema(p.to_dict())), exp.params) == exp.params
    assert as_stored(json_safe(without_schema(typed.summary.to_dict())), exp.summary) == exp.summary
    for rec, old in zip(typed.records, exp.records):
        back = json_safe(without_schema(rec.to_dict()))
        assert back == old and list(back) == list(old)  # the same keys, in the same order
