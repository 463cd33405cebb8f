"""Tests for app.core.store (RunStore): round trips, WAL, history order, deletion, the
model-hash cache and the errors a user sees for a damaged or locked database."""

from __future__ import annotations

import os
import sqlite3

import pytest

from app.core.store import (
    DB_FILE,
    PREVIEW_CHARS,
    RunNotFoundError,
    RunStore,
    RunSummary,
    SCHEMA_VERSION,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
)
from app.core.trace import Trace
from backends.base import Finished, SamplerSettings, StageInfo, Step, TokenAlt


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLESCOPE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("SAMPLESCOPE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SAMPLESCOPE_CACHE_DIR", str(tmp_path / "cache"))


def make_step(i: int, token: str = "tok", *, estimated: bool = False) -> Step:
    top = (
        TokenAlt(100 + i, token, 0.5, 0.625),
        TokenAlt(7, ", \"x\"\n", 0.3, 0.375),
        TokenAlt(None, "é", 0.1, 0.0),
    )
    return Step(
        index=i,
        position=12 + i,
        token_id=100 + i,
        token=token,
        piece=token,
        p_raw=0.5,
        p_final=0.625,
        rank=1,
        entropy_raw=1.25 + i / 7,
        entropy_final=0.75,
        kl_final_raw=0.1 * (i + 1),
        top=top,
        stages=(StageInfo("top_k", 2, 0.1, 0.1, (0.55, 0.45, 0.0)), StageInfo("temperature", 2, 0.0, 0.0, (0.625, 0.375, 0.0))),
        kept=2,
        forced=(i == 0),
        estimated=estimated,
        unseen_mass=0.1 if estimated else 0.0,
    )


def make_trace(n: int = 4, prompt: str = "Once upon a time", *, finished: bool = True) -> Trace:
    tokens = [" there", " was", ",\n", " \"a\"", " king", "."]
    trace = Trace(prompt=prompt, settings=SamplerSettings(temperature=0.7, seed=1234, stop=("\n\n",)), model_name="tiny")
    trace.extend(make_step(i, tokens[i % len(tokens)]) for i in range(n))
    if finished:
        trace.finished = Finished("length", trace.text, n, 0.5, prompt_tokens=5, reused_tokens=2, message="ok")
    return trace


def test_default_location_uses_data_dir(tmp_path):
    store = RunStore()
    assert store.path == tmp_path / "data" / DB_FILE
    assert store.path.exists()


def test_round_trip(tmp_path):
    store = RunStore()
    trace = make_trace(5)
    run_id = store.save_run(trace, None, "tiny-model")
    assert trace.run_id == run_id
    loaded = RunStore().load_run(run_id)  # a fresh connection reads what was committed
    assert loaded.run_id == run_id
    assert loaded.steps == trace.steps
    assert loaded.prompt == trace.prompt
    assert loaded.settings == trace.settings
    assert loaded.finished == trace.finished
    assert loaded.model_name == "tiny-model"
    assert loaded.entropy_raw.view().tolist() == trace.entropy_raw.view().tolist()


def test_round_trip_unfinished_and_empty():
    store = RunStore()
    trace = make_trace(0, finished=False)
    loaded = store.load_run(store.save_run(trace, None, "m"))
    assert loaded.steps == [] and loaded.finished is None


def test_columns_hold_model_and_finish_info(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 1000)
    store = RunStore()
    digest = store.sha256_of(model)
    trace = make_trace(3)
    trace.steps[:] = [make_step(i, estimated=(i == 1)) for i in range(3)]
    run_id = store.save_run(trace, str(model), "tiny")
    con = sqlite3.connect(store.path)
    row = con.execute(
        "SELECT model_path, model_size, model_sha256, seed, n_tokens, tokens_per_s, finish_reason, estimated, text"
        " FROM runs WHERE id = ?", (run_id,)
    ).fetchone()
    con.close()
    assert row == (str(model), 1004, digest, 1234, 3, pytest.approx(6.0), "length", 1, trace.finished.text)


def test_save_never_stores_url_credentials():
    store = RunStore()
    run_id = store.save_run(make_trace(1), "https://user:sk-secret@api.example.com:8443/v1?api_key=sk-2#x", "remote")
    con = sqlite3.connect(store.path)
    dump = "\n".join(con.iterdump())
    con.close()
    assert "sk-secret" not in dump and "sk-2" not in dump and "user:" not in dump
    assert "https://api.example.com:8443/v1" in dump
    assert store.load_run(run_id).model_name == "remote"


def test_wal_mode():
    store = RunStore()
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    con.close()


def test_list_runs_newest_first_and_limit():
    store = RunStore()
    ids = [store.save_run(make_trace(i + 1, prompt=f"prompt {i}"), None, f"m{i}") for i in range(4)]
    runs = store.list_runs()
    assert [r.id for r in runs] == ids[::-1]
    assert all(isinstance(r, RunSummary) for r in runs)
    newest = runs[0]
    assert (newest.model_name, newest.prompt_preview, newest.n_tokens, newest.finish_reason) == ("m3", "prompt 3", 4, "length")
    assert newest.tokens_per_s == pytest.approx(8.0)
    assert [r.id for r in store.list_runs(limit=2)] == ids[:1:-1]
    with pytest.raises(Exception):
        newest.id = 5  # frozen


def test_prompt_preview_is_short_and_single_line():
    store = RunStore()
    store.save_run(make_trace(1, prompt="line one\nline two\t" + "x" * 500), None, "m")
    preview = store.list_runs()[0].prompt_preview
    assert "\n" not in preview and len(preview) <= PREVIEW_CHARS
    assert preview.startswith("line one line two x") and preview.endswith("\u2026")


def test_unfinished_run_listed():
    store = RunStore()
    store.save_run(make_trace(2, finished=False), None, "m")
    r = store.list_runs()[0]
    assert r.finish_reason is None and r.tokens_per_s is None and r.n_tokens == 2


def test_save_again_rewrites_same_run():
    store = RunStore()
    trace = make_trace(2)
    run_id = store.save_run(trace, None, "m")
    trace.append(make_step(2, "!"))
    assert store.save_run(trace, None, "m") == run_id
    assert len(store.list_runs()) == 1
    assert store.load_run(run_id).steps == trace.steps


def test_delete_run():
    store = RunStore()
    a = store.save_run(make_trace(2), None, "a")
    b = store.save_run(make_trace(3), None, "b")
    assert store.delete_run(a) is True
    assert [r.id for r in store.list_runs()] == [b]
    assert store.delete_run(a) is False
    with pytest.raises(RunNotFoundError) as info:
        store.load_run(a)
    assert isinstance(info.value, StoreError) and str(a) in str(info.value)
    con = sqlite3.connect(store.path)
    assert con.execute("SELECT COUNT(*) FROM steps WHERE run_id = ?", (a,)).fetchone()[0] == 0
    con.close()
    assert len(store.load_run(b)) == 3


def test_sha256_cached_and_invalidated(tmp_path):
    import hashlib

    model = tmp_path / "m.gguf"
    data = os.urandom(3 * 1024 * 1024 + 17)
    model.write_bytes(data)
    store = RunStore()
    calls: list[tuple[int, int]] = []
    assert store.cached_sha256(model) is None
    digest = store.sha256_of(model, progress=lambda d, t: calls.append((d, t)))
    assert digest == hashlib.sha256(data).hexdigest()
    assert calls and calls[-1] == (len(data), len(data))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    calls.clear()
    assert RunStore().sha256_of(model, progress=lambda d, t: calls.append((d, t))) == digest
    assert calls == []  # served from the cache, file not read
    assert store.cached_sha256(model) == digest

    new = b"different" * 10
    model.write_bytes(new)
    st = os.stat(model)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert store.cached_sha256(model) is None
    assert store.sha256_of(model, progress=lambda d, t: calls.append((d, t))) == hashlib.sha256(new).hexdigest()
    assert calls[-1] == (len(new), len(new))


def test_sha256_same_size_new_mtime_rehashes(tmp_path):
    model = tmp_path / "m.bin"
    model.write_bytes(b"a" * 100)
    store = RunStore()
    first = store.sha256_of(model)
    st = os.stat(model)
    model.write_bytes(b"b" * 100)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert store.sha256_of(model) != first


def test_sha256_missing_file_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        RunStore().sha256_of(tmp_path / "nope.gguf")


def test_corrupt_db_file_raises_store_error(tmp_path):
    bad = tmp_path / "data" / DB_FILE
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not an sqlite database at all, just some text\n" * 100)
    with pytest.raises(StoreCorruptError) as info:
        RunStore()
    assert isinstance(info.value, StoreError)
    msg = str(info.value)
    assert str(bad) in msg and "move" in msg.lower()


def test_unopenable_location_raises_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        RunStore(blocker / "runs.sqlite3")


def test_newer_schema_refused(tmp_path):
    store = RunStore()
    store.close()
    con = sqlite3.connect(store.path)
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer"):
        RunStore()


def test_locked_db_raises_store_locked_error():
    store = RunStore(timeout=0.1)
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreLockedError, match="locked"):
            store.save_run(make_trace(1), None, "m")
        assert store.list_runs() == []  # WAL: reading is not blocked by the writer
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.save_run(make_trace(1), None, "m")
    assert len(store.list_runs()) == 1


def test_connection_per_thread():
    import threading

    store = RunStore()
    run_id = store.save_run(make_trace(2), None, "m")
    result: list[object] = []

    def work() -> None:
        try:
            result.append(len(store.load_run(run_id)))
        except Exception as exc:  # pragma: no cover - reported below
            result.append(exc)
        finally:
            store.close()

    t = threading.Thread(target=work)
    t.start()
    t.join(10)
    assert result == [2]


# -- lab runs (experiments) -------------------------------------------------------------------

def test_experiment_records_kept_as_they_arrive_and_summary_last():
    store = RunStore()
    eid = store.start_experiment("vs", "Name a US state", {"k": 5, "n": 3}, model_name="m",
                                 model_path="http://user:pw@host:8080/v1?key=s3cret")
    assert [store.add_record(eid, {"run": i, "text": f"é{i}"}) for i in range(3)] == [0, 1, 2]
    partial = store.load_experiment(eid)  # what a Stop or a crash leaves behind
    assert partial.status == "running" and partial.summary is None
    assert [r["run"] for r in partial.records] == [0, 1, 2] and partial.records[0]["text"] == "é0"
    assert "s3cret" not in (partial.model_path or "") and "pw" not in (partial.model_path or "")
    store.finish_experiment(eid, {"ratio": 1.5}, status="stopped")
    done = store.load_experiment(eid)
    assert done.status == "stopped" and done.summary == {"ratio": 1.5} and done.params == {"k": 5, "n": 3}
    (row,) = store.list_experiments("vs")
    assert (row.id, row.kind, row.title, row.n_records, row.status) == (eid, "vs", "Name a US state", 3, "stopped")
    assert store.list_experiments("shift") == []


def test_experiment_missing_and_deleted():
    store = RunStore()
    eid = store.start_experiment("vs", "t", {}, model_name="m")
    store.add_record(eid, {"a": 1})
    assert store.delete_experiment(eid) is True
    assert store.delete_experiment(eid) is False
    with pytest.raises(RunNotFoundError):
        store.load_experiment(eid)
    with pytest.raises(RunNotFoundError):
        store.add_record(eid, {"a": 2})
    with pytest.raises(RunNotFoundError):
        store.finish_experiment(eid, None)


def test_version_1_database_gains_experiment_tables(tmp_path):
    path = tmp_path / "old.sqlite3"
    store = RunStore(path)
    run_id = store.save_run(make_trace(2), None, "m")
    store.close()
    con = sqlite3.connect(path)
    con.execute("DROP TABLE experiment_records")
    con.execute("DROP TABLE experiments")
    con.execute("UPDATE schema_version SET version = 1")
    con.commit()
    con.close()
    store = RunStore(path)
    assert store.load_run(run_id).prompt == make_trace(2).prompt  # old runs survive the upgrade
    eid = store.start_experiment("vs", "t", {}, model_name="m")
    assert store.load_experiment(eid).records == ()
    con = sqlite3.connect(path)
    assert con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    con.close()
