"""The run store under faults: runs saved as they are made, interrupted runs found after a
crash, several processes writing at once, text that is not valid Unicode, the version 2 schema
upgraded, and only real damage called damage."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from app.core.store import (INTERRUPTED_MESSAGE, SCHEMA_VERSION, RecordUnreadableError, RunHead, RunStore,
                            StoreCorruptError, StoreError, StoreLockedError, owner_alive, process_owner,
                            retry_locked)
from backends.base import Finished, SamplerSettings
from tests.widgets.factory import make_step, make_trace

HEAD = RunHead(prompt="Once", settings=SamplerSettings(seed=5), model_name="m")


def test_a_run_is_saved_step_by_step_and_finished(tmp_path):
    store = RunStore(tmp_path / "r.sqlite3")
    run_id = store.start_run(HEAD)
    assert store.list_runs()[0].finish_reason is None  # listed while it runs
    store.append_steps(run_id, 0, [make_step(0, "A"), make_step(1, "B")])
    store.append_steps(run_id, 2, [make_step(2, "C")])
    partial = store.load_run(run_id)
    assert partial.text == "ABC" and partial.finished is None and len(partial) == 3
    store.finish_run(run_id, Finished("length", "ABC", 3, 1.5), n_steps=3)
    done = store.load_run(run_id)
    assert done.finished.reason == "length" and done.finished.text == "ABC" and len(done) == 3
    assert store.list_runs()[0].tokens_per_s == pytest.approx(2.0)


def test_interrupted_runs_of_dead_processes_are_marked_and_kept(tmp_path):
    path = tmp_path / "r.sqlite3"
    # a child process starts a run, saves two steps and dies without a word (like kill -9)
    code = ("import sys, os; from app.core.store import RunStore, RunHead; from backends.base import SamplerSettings;"
            "from tests.widgets.factory import make_step;"
            f"s = RunStore({str(path)!r}); r = s.start_run(RunHead('p', SamplerSettings(), 'm'));"
            "s.append_steps(r, 0, [make_step(0, 'x'), make_step(1, 'y')]); s.start_experiment('vs', 't', {}, model_name='m');"
            "os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())
    store = RunStore(path)
    mine = store.start_run(HEAD)  # this process is alive: its run is not touched
    assert store.mark_interrupted() == (1, 1)
    runs = {r.id: r for r in store.list_runs()}
    dead = next(r for r in runs.values() if r.id != mine)
    assert dead.finish_reason == "interrupted" and dead.n_tokens == 2 and runs[mine].finish_reason is None
    trace = store.load_run(dead.id)
    assert trace.text == "xy" and trace.finished.reason == "interrupted"
    assert trace.finished.message == INTERRUPTED_MESSAGE
    assert store.list_experiments()[0].status == "interrupted"
    assert store.mark_interrupted() == (0, 0)  # once


def test_owner_liveness():
    assert owner_alive(process_owner())
    host, pid, started = process_owner().split("|")
    assert not owner_alive(f"{host}|{pid}|{int(started or 0) + 12345}")  # a pid reused by another process
    assert not owner_alive(f"{host}|999999999|1")
    assert owner_alive("another-host|1|1")  # never declared dead from here
    assert not owner_alive(None) and not owner_alive("junk")


def test_retry_waits_out_a_lock_and_gives_up_only_after_its_patience():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise StoreLockedError("locked")
        return "ok"

    slept: list[float] = []
    assert retry_locked(flaky, sleep=slept.append) == "ok" and len(calls) == 4
    assert slept == sorted(slept) and slept[0] < 0.1
    with pytest.raises(StoreLockedError):
        retry_locked(lambda: (_ for _ in ()).throw(StoreLockedError("still")), timeout=0.0, sleep=lambda s: None)
    with pytest.raises(StoreError):  # other errors are not retried
        retry_locked(lambda: (_ for _ in ()).throw(StoreError("full disk")), sleep=slept.append)


def _writer(path: str, n_steps: int, barrier, out) -> None:
    from app.core.store import RunStore, retry_locked
    from tests.widgets.factory import make_trace

    store = RunStore(path, timeout=0.05)  # a short busy timeout: the retries do the waiting
    trace = make_trace([f"t{i}" for i in range(n_steps)])
    barrier.wait()
    ok = 0
    for _ in range(3):
        retry_locked(lambda: store.save_run(trace, None, "m"), timeout=120)
        trace.run_id = None
        ok += 1
    out.put(ok)


def test_four_processes_saving_large_runs_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "r.sqlite3")
    RunStore(path).close()
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(path, 3000, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    assert sorted(out.get(timeout=5) for _ in procs) == [3, 3, 3, 3]
    runs = RunStore(path).list_runs()
    assert len(runs) == 12 and all(r.n_tokens == 3000 for r in runs)


def test_text_that_is_not_valid_unicode_is_saved_not_called_damage(tmp_path):
    store = RunStore(tmp_path / "r.sqlite3")
    trace = make_trace(["ok", "bad\ud800half"], prompt="p\udcff")
    run_id = store.save_run(trace, None, "model \ud83d")
    back = store.load_run(run_id)
    assert back.text == "okbad\ufffdhalf" and back.prompt == "p\ufffd"
    run2 = store.start_run(RunHead("lone \udc80", SamplerSettings(), "m"))
    store.append_steps(run2, 0, [make_step(0, "\ud83d\ude00")])
    assert store.load_run(run2).text == "\U0001F600"


def test_an_unreadable_row_names_the_run_and_not_the_whole_file(tmp_path):
    path = tmp_path / "r.sqlite3"
    store = RunStore(path)
    run_id = store.save_run(make_trace(["a", "b"]), None, "m")
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE steps SET json = '{not json' WHERE run_id = ?", (run_id,))
    store = RunStore(path)
    with pytest.raises(RecordUnreadableError, match=f"Run #{run_id}") as info:
        store.load_run(run_id)
    assert "damaged" not in str(info.value) and "delete it)" not in str(info.value)
    assert not isinstance(info.value, StoreCorruptError)
    assert len(store.list_runs()) == 1  # the rest of the history reads fine


def test_version_2_database_gains_status_and_owner(tmp_path):
    from app.core import store as store_module

    path = tmp_path / "v2.sqlite3"
    v2 = (store_module._SCHEMA.replace(",\n    status        TEXT    NOT NULL DEFAULT 'done',\n    owner         TEXT", "")
          .replace(",\n    owner         TEXT", ""))
    assert "owner" not in v2
    with sqlite3.connect(path) as db:  # a database as version 2 wrote it
        db.executescript(v2)
        db.execute("INSERT INTO schema_version (version) VALUES (2)")
        db.execute("INSERT INTO runs (created_at, model_name, prompt, text, settings_json, n_tokens, finish_reason,"
                   " finished_json) VALUES ('2026-01-01T00:00:00+00:00', 'm', 'p', 'a', ?, 0, 'eos', ?)",
                   (json.dumps(SamplerSettings().to_dict()), json.dumps({"reason": "eos", "n_tokens": 0})))
    store = RunStore(path)
    (old,) = store.list_runs()
    assert store.load_run(old.id).finished.text == "a"
    new = store.start_run(HEAD)
    assert store.mark_interrupted() == (0, 0)  # this process owns the running one
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("SELECT status FROM runs WHERE id = ?", (old.id,)).fetchone()[0] == "done"
        assert db.execute("SELECT status FROM runs WHERE id = ?", (new,)).fetchone()[0] == "running"


def test_writes_from_a_second_thread(tmp_path):
    store = RunStore(tmp_path / "r.sqlite3")
    ids = []
    t = threading.Thread(target=lambda: ids.append(store.start_run(HEAD)))
    t.start()
    t.join()
    store.append_steps(ids[0], 0, [make_step(0, "z")])
    assert json.loads(json.dumps(store.load_run(ids[0]).text)) == "z"
