"""Tests for app.core.export: JSON round trip, CSV columns and quoting, bad files."""

from __future__ import annotations

import csv
import json

import pytest

from app.core.export import (
    CSV_COLUMNS,
    TraceFormatError,
    read_json,
    trace_to_json,
    write_csv,
    write_json,
)
from app.core.trace import Trace
from backends.base import Finished, SamplerSettings, StageInfo, Step, TokenAlt

NASTY = ['plain', 'a,b', 'say "hi"', 'line\nbreak', '\r\n', ' ,"\n"', '=SUM(A1)', 'naïve 日本', '']


def make_step(i: int, token: str, n_top: int = 6) -> Step:
    top = tuple(TokenAlt(i * 10 + k, f"{token}|{k}" if k else token, 0.5 / (k + 1), 0.6 / (k + 1)) for k in range(n_top))
    return Step(
        index=i,
        position=3 + i,
        token_id=None if i == 1 else 500 + i,
        token=token,
        piece=token or "<0xE2>",
        p_raw=0.5 if i != 2 else 0.0,  # p_raw 0: infinite surprisal
        p_final=0.6,
        rank=1 + i % 3,
        entropy_raw=2.0 + i,
        entropy_final=1.0 + i / 3,
        kl_final_raw=0.25,
        top=top,
        stages=(StageInfo("min_p", n_top, 0.01, 0.02, tuple(a.p_final for a in top)),),
        kept=n_top,
        forced=i == 0,
        estimated=i % 2 == 1,
        unseen_mass=0.05 if i % 2 else 0.0,
    )


def make_trace() -> Trace:
    trace = Trace(prompt='Prompt, with "quotes"\nand lines', settings=SamplerSettings(top_k=7, stop=("END",)), model_name="tiny")
    trace.extend(make_step(i, tok, n_top=6 if i != 3 else 2) for i, tok in enumerate(NASTY))
    trace.finished = Finished("stop", trace.text, len(NASTY), 2.0, prompt_tokens=4, message="")
    return trace


def test_trace_to_json_content():
    trace = make_trace()
    d = json.loads(trace_to_json(trace))
    assert d["format"] == "samplescope-trace" and d["version"] == 1
    assert d["prompt"] == trace.prompt
    assert d["model"] == {"name": "tiny"}
    assert d["settings"] == trace.settings.to_dict()
    assert d["finished"]["reason"] == "stop" and d["finished"]["tokens_per_s"] == pytest.approx(len(NASTY) / 2.0)
    assert d["steps"] == [json.loads(json.dumps(s.to_dict())) for s in trace.steps]
    assert "path" not in json.dumps(d["model"])


def test_json_round_trip(tmp_path):
    trace = make_trace()
    path = tmp_path / "run.json"
    write_json(trace, path)
    back = read_json(path)
    assert back.steps == trace.steps
    assert back.prompt == trace.prompt
    assert back.settings == trace.settings
    assert back.finished == trace.finished
    assert back.model_name == trace.model_name
    assert back.run_id is None
    assert back.surprisal.view().shape == (len(NASTY),)


def test_json_round_trip_unfinished(tmp_path):
    trace = Trace(prompt="p")
    write_json(trace, tmp_path / "t.json")
    back = read_json(tmp_path / "t.json")
    assert back.finished is None and back.steps == [] and back.settings == SamplerSettings()


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ('{"format": "something-else"}', "not a Samplescope trace"),
        ('[1, 2]', "not a Samplescope trace"),
        ('{"format": "samplescope-trace", "version": 99, "steps": []}', "newer"),
        ('{"format": "samplescope-trace", "version": 1, "steps": [{"index": 0}]}', "damaged"),
    ],
)
def test_read_json_rejects_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TraceFormatError, match=match):
        read_json(path)


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_csv_header_and_quoting(tmp_path):
    trace = make_trace()
    path = tmp_path / "run.csv"
    write_csv(trace, path)
    rows = read_rows(path)
    header, body = rows[0], rows[1:]
    assert tuple(header) == CSV_COLUMNS
    assert header[:15] == [
        "index", "position", "token_id", "token", "p_raw", "p_final", "rank", "entropy_raw",
        "entropy_final", "surprisal", "kl_final_raw", "kept", "forced", "estimated", "unseen_mass",
    ]
    assert header[15:18] == ["top1_token", "top1_p_raw", "top1_p_final"]
    assert header[-3:] == ["top5_token", "top5_p_raw", "top5_p_final"]
    assert len(body) == len(NASTY)
    col = {name: k for k, name in enumerate(header)}
    for row, step in zip(body, trace.steps):
        assert len(row) == len(header)
        assert row[col["token"]] == step.token  # commas, quotes, newlines intact
        assert row[col["top1_token"]] == step.top[0].token
        assert float(row[col["p_raw"]]) == step.p_raw
        assert float(row[col["entropy_raw"]]) == step.entropy_raw
        assert row[col["forced"]] == ("1" if step.forced else "0")
        assert row[col["estimated"]] == ("1" if step.estimated else "0")
    assert body[1][col["token_id"]] == ""  # no id
    assert body[2][col["surprisal"]] == ""  # infinite surprisal
    assert float(body[0][col["surprisal"]]) == pytest.approx(trace.steps[0].surprisal)
    # step 3 has only two alternatives: the rest of the top columns are empty
    assert body[3][col["top2_token"]] == trace.steps[3].top[1].token
    assert body[3][col["top3_token"]] == body[3][col["top5_p_final"]] == ""
    assert body[0][col["top5_token"]] == "plain|4"


def test_csv_raw_file_quotes_special_tokens(tmp_path):
    path = tmp_path / "run.csv"
    write_csv(make_trace(), path)
    raw = path.read_bytes().decode("utf-8")
    assert '"a,b"' in raw
    assert '"say ""hi"""' in raw
    assert '"line\nbreak"' in raw
    assert "naïve 日本" in raw


def test_csv_excel_safe(tmp_path):
    trace = make_trace()
    plain, safe = tmp_path / "plain.csv", tmp_path / "safe.csv"
    write_csv(trace, plain)
    write_csv(trace, safe, excel_safe=True)
    token_col = CSV_COLUMNS.index("token")
    assert read_rows(plain)[7][token_col] == "=SUM(A1)"
    assert read_rows(safe)[7][token_col] == "'=SUM(A1)"
    assert read_rows(safe)[1][token_col] == "plain"


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    path.write_text("old", encoding="utf-8")
    import app.core.paths as paths

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(paths.os, "replace", boom)
    with pytest.raises(OSError):
        write_json(make_trace(), path)
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # temp file removed
