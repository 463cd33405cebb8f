"""Prompt scoring (the X-ray's numbers, ``samplescope score``) on the embedded model: every
token's log-probability equals what step-by-step evaluation gives, within llama.cpp's batch
noise, and the command prints the records and the perplexity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.cli import main
from app.core.scoring import score_text

TEXT = "The quick brown fox jumps over the lazy dog. Then it ran into the forest and"
#: measured here: batched against one-at-a-time evaluation moves a log-probability by at most
#: 0.17 nats on this text (llama.cpp's float noise from the batch shape: docs/ARCHITECTURE.md,
#: "Batching noise"); 0.5 leaves room for other processors' kernels, and a wrong position (an
#: off-by-one between logits and tokens) is off by several nats
TOL = 0.5


def _logprob(logits: np.ndarray, tok: int) -> float:
    lg = logits.astype(np.float64)
    m = lg.max()
    return float(lg[tok] - m - math.log(np.exp(lg - m).sum()))


def test_scores_equal_step_by_step_evaluation(local_backend):
    res = score_text(local_backend, TEXT, top_n=3, chunk=8)  # several chunks: their seams are covered
    toks = [t.token_id for t in res.tokens]
    assert toks == local_backend.tokenize(TEXT) and res.tokens[0].logprob is None and res.tokens[0].rank is None
    local_backend.prepare(toks[:1])
    diffs = []
    for i in range(1, len(toks)):
        step = _logprob(np.asarray(local_backend.logits()), toks[i])
        diffs.append(abs(step - res.tokens[i].logprob))
        local_backend.feed(toks[i])
    assert max(diffs) < TOL, max(diffs)
    for t in res.tokens[1:]:
        assert t.logprob <= 0 and t.rank >= 1 and len(t.top) == 3
        assert (t.rank == 1) == (t.top[0][0] == t.token_id)
        assert t.top[0][2] >= t.top[1][2] >= t.top[2][2]
    assert res.perplexity == pytest.approx(math.exp(-sum(t.logprob for t in res.tokens[1:]) / (len(toks) - 1)))


def test_the_score_command_prints_records_and_the_perplexity(capsys):
    assert main(["score", "--prompt", "The capital of France is", "--continuation", " Paris", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    records, summary = lines[:-1], lines[-1]["summary"]
    assert records[0]["logprob"] is None and records[0]["position"] == 0
    assert set(records[1]) >= {"position", "token_id", "token", "logprob", "rank", "top"}
    cont = [r for r in records if r["continuation"]]
    assert cont and cont[0]["token"] == " Paris"
    assert summary["n_scored"] == len(cont)
    assert summary["perplexity"] == pytest.approx(math.exp(-sum(r["logprob"] for r in cont) / len(cont)))


def test_score_refuses_an_empty_prompt_and_says_why_a_server_fails(capsys):
    assert main(["score", "--prompt", "x", "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]) == 1
    err = capsys.readouterr().err
    assert "127.0.0.1:9" in err and "Traceback" not in err
    assert main(["score", "--prompt", ""]) != 0
    assert "empty" in capsys.readouterr().err


def test_a_server_scores_a_prompt_like_the_local_model(llama_server, local_backend, capsys):
    """The real llama-cpp-python server echoes the prompt's log-probabilities: they equal the
    local scorer's token for token (measured: within 1e-6 nats; TOL allows for batch noise). It
    echoes no BOS, so its first token is the unscored one."""
    assert main(["score", "--prompt", TEXT, "--base-url", llama_server.base_url, "--model", llama_server.model,
                 "--top", "5", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    records, summary = lines[:-1], lines[-1]["summary"]
    ref = score_text(local_backend, TEXT, top_n=5)
    assert [r["token"] for r in records] == [t.token for t in ref.tokens[1:]]
    assert records[0]["logprob"] is None
    diffs = [abs(r["logprob"] - t.logprob) for r, t in zip(records[1:], ref.tokens[2:])]
    assert max(diffs) < TOL, max(diffs)
    for r, t in zip(records[1:], ref.tokens[2:]):  # ranks within the top 5; beyond it, "6"
        assert r["estimated"] and r["rank"] == min(t.rank, 6)
    assert summary["n_scored"] == len(records) - 1 and summary["perplexity"] > 1
