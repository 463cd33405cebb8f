"""The run store: every finished generation, kept in SQLite at ``data_dir()/runs.sqlite3``.

Owns: ``RunStore`` (the database file, its schema and its version), ``RunSummary``, the
model-file SHA-256 cache and the ``StoreError`` tree. Used on the GUI thread (the
controller saves a run when it finishes; the history panel lists, loads and deletes runs).
Each thread that calls the store gets its own connection (sqlite3's ``check_same_thread``
stays on), so ``sha256_of`` may also be run on a worker. Qt-free.

Schema (version ``SCHEMA_VERSION``, recorded in ``schema_version``)::

    runs(id, created_at ISO-8601 UTC, model_name, model_path, model_size, model_sha256,
         prompt, text, settings_json, seed, n_tokens, tokens_per_s, finish_reason,
         estimated, finished_json, status, owner)
    steps(run_id, idx, json)                 -- one row per Step, json = Step.to_dict()
    model_hashes(path, size, mtime_ns, sha256)
    experiments(id, created_at, kind, title, model_name, model_path, model_sha256,
                params_json, summary_json, status, owner)  -- a lab run (VS comparison, ...)
    experiment_records(experiment_id, idx, json)             -- one row per record, as it arrives

A workbench run is saved as it is made: ``start_run`` (status "running"), ``append_steps`` as
steps arrive, ``finish_run`` (status "done"); a lab run likewise (``start_experiment``,
``add_record``, ``finish_experiment``). ``owner`` names the process writing a running row
(host, pid, process start time): ``mark_interrupted`` (called when the app starts) turns the
rows of processes that no longer exist into "interrupted", so a crash or a kill -9 keeps every
step saved before it and nothing is listed as running forever.

Older databases are upgraded in place when opened (version 1 gains the experiment tables,
version 2 the status and owner columns).
The journal is WAL, so reading the history never waits for a save. Nothing secret is
stored: a remote ``model_path`` that is a URL loses its user name, password and query string.

Over 500 lines on purpose: one SQLite schema, its migrations and every query against it, so a
schema change is made and reviewed in one file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar
from urllib.parse import urlsplit, urlunsplit

from app.core.export import finished_from_dict, finished_to_dict
from app.core.paths import data_dir
from app.core.trace import Trace
from backends.base import Finished, SamplerSettings, Step
from backends.text import clean_json, clean_text, loads_json

T = TypeVar("T")

__all__ = [
    "RunStore",
    "RunSummary",
    "ExperimentSummary",
    "Experiment",
    "StoreError",
    "StoreCorruptError",
    "StoreLockedError",
    "RunNotFoundError",
    "RecordUnreadableError",
    "SCHEMA_VERSION",
    "DB_FILE",
    "PREVIEW_CHARS",
    "RunHead",
    "retry_locked",
    "process_owner",
    "owner_alive",
    "INTERRUPTED_MESSAGE",
]

SCHEMA_VERSION = 3
DB_FILE = "runs.sqlite3"
#: Length of ``RunSummary.prompt_preview`` (longer prompts end with an ellipsis).
PREVIEW_CHARS = 80
_HASH_CHUNK = 4 * 1024 * 1024

ProgressCallback = Callable[[int, int], None]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at    TEXT    NOT NULL,
    model_name    TEXT    NOT NULL,
    model_path    TEXT,
    model_size    INTEGER,
    model_sha256  TEXT,
    prompt        TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    settings_json TEXT    NOT NULL,
    seed          INTEGER,
    n_tokens      INTEGER NOT NULL,
    tokens_per_s  REAL,
    finish_reason TEXT,
    estimated     INTEGER NOT NULL DEFAULT 0,
    finished_json TEXT,
    status        TEXT    NOT NULL DEFAULT 'done',
    owner         TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    idx    INTEGER NOT NULL,
    json   TEXT    NOT NULL,
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS model_hashes (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256   TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS experiments (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at    TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    title         TEXT    NOT NULL,
    model_name    TEXT    NOT NULL,
    model_path    TEXT,
    model_sha256  TEXT,
    params_json   TEXT    NOT NULL,
    summary_json  TEXT,
    status        TEXT    NOT NULL DEFAULT 'running',
    owner         TEXT
);
CREATE INDEX IF NOT EXISTS experiments_by_created ON experiments (created_at);
CREATE TABLE IF NOT EXISTS experiment_records (
    experiment_id INTEGER NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL,
    json          TEXT    NOT NULL,
    PRIMARY KEY (experiment_id, idx)
) WITHOUT ROWID;
"""


class StoreError(Exception):
    """The run store cannot do what was asked. The message says what to do about it."""


class StoreCorruptError(StoreError):
    """The database file is not an SQLite database or is damaged."""


class StoreLockedError(StoreError):
    """Another program holds the database locked for longer than the store's timeout."""


class RecordUnreadableError(StoreError):
    """One stored run or lab run cannot be read back; the database itself is fine."""


class RunNotFoundError(StoreError, KeyError):
    """No run has the given id (it was deleted, or the id is wrong)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One line of the run history."""

    id: int
    created_at: str
    model_name: str
    prompt_preview: str
    n_tokens: int
    finish_reason: str | None
    tokens_per_s: float | None


@dataclass(frozen=True, slots=True)
class RunHead:
    """What a run is before its first step (``start_run``): frozen, so the store thread may
    hold it while the GUI thread goes on."""

    prompt: str
    settings: SamplerSettings
    model_name: str
    model_path: str | None = None
    model_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class ExperimentSummary:
    """One line of the list of lab runs."""

    id: int
    created_at: str
    kind: str
    title: str
    model_name: str
    status: str
    n_records: int


@dataclass(frozen=True)
class Experiment:
    """A lab run read back: its parameters, every record in arrival order, and the summary
    (None while it runs or if it was interrupted before one was written)."""

    id: int
    created_at: str
    kind: str
    title: str
    model_name: str
    model_path: str | None
    model_sha256: str | None
    status: str
    #: the stored dicts; a lab's ``RecordTypes.read_experiment`` gives them typed
    params: Any
    records: tuple
    summary: Any
    #: records that could not be read back (``RecordTypes.read_experiment``), one line each
    problems: tuple[str, ...] = ()


def _rowid(cur: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just made."""
    if cur.lastrowid is None:
        raise StoreError("The run store did not give the new row an id.")
    return int(cur.lastrowid)


#: Why an interrupted run ended, as its ``Finished.message`` says.
INTERRUPTED_MESSAGE = ("Samplescope stopped during this run (a crash, a kill or a power cut); "
                       "the steps saved before that are kept.")


def _js(obj) -> str:
    """Compact JSON of a value to store; every string valid Unicode (SQLite encodes UTF-8)."""
    return json.dumps(clean_json(obj), ensure_ascii=False, separators=(",", ":"))


def _start_time(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else ""; with the
    pid it tells a live writer from a new process that reuses a dead one's pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
        return stat[stat.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return ""


def process_owner() -> str:
    """This process as the owner of the rows it is writing: host, pid and start time."""
    pid = os.getpid()
    return f"{socket.gethostname()}|{pid}|{_start_time(pid)}"


def owner_alive(owner: str | None) -> bool:
    """Whether the process named by ``owner`` (``process_owner``) may still be writing. A row
    of another host is never declared dead (it may share a network folder)."""
    if not owner:
        return False
    try:
        host, pid_s, started = owner.split("|", 2)
        pid = int(pid_s)
    except ValueError:
        return False
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return started == _start_time(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        pass
    return not started or _start_time(pid) in ("", started)


def retry_locked(fn: Callable[[], T], *, timeout: float = 600.0, sleep: Callable[[float], object] | None = None,
                 stop: threading.Event | None = None) -> T:
    """``fn()``, tried again with exponential back-off (50 ms doubling to 2 s, with jitter)
    while the database is locked by another writer, for up to ``timeout`` seconds (or until
    ``stop`` is set); then the last ``StoreLockedError`` is raised. Other errors raise at once."""
    wait = sleep or (stop.wait if stop is not None else time.sleep)
    clock = time.monotonic
    deadline = clock() + timeout
    delay = 0.05
    while True:
        try:
            return fn()
        except StoreLockedError:
            if clock() + delay > deadline or (stop is not None and stop.is_set()):
                raise
            wait(delay * (0.75 + 0.5 * random.random()))
            delay = min(2.0, delay * 2)


def _preview(prompt: str) -> str:
    flat = " ".join(prompt.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "\u2026"


def _scrub_location(model_path: str | None) -> str | None:
    """A local path unchanged; a URL without credentials, query or fragment."""
    if not model_path or "://" not in model_path:
        return model_path
    try:
        parts = urlsplit(model_path)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return None
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RunStore:
    """Saved runs in one SQLite file (default ``data_dir()/runs.sqlite3``).

    Opening checks the file: ``StoreCorruptError`` if it is not a usable database,
    ``StoreError`` if it cannot be created or was written by a newer Samplescope,
    ``StoreLockedError`` if another program keeps it locked longer than ``timeout`` seconds.
    Every method raises only ``StoreError`` subclasses for database problems (and ``OSError``
    from ``sha256_of`` when the model file cannot be read).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = 5.0) -> None:
        self._timeout = timeout
        self._local = threading.local()
        try:
            self._path = Path(path) if path is not None else data_dir() / DB_FILE
            self._path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"The folder for the run database could not be created ({exc}). Check that you may "
                "write there, or set SAMPLESCOPE_DATA_DIR to another folder."
            ) from exc
        with self._errors("open"):
            self._ensure_schema(self._conn())

    @property
    def path(self) -> Path:
        return self._path

    # -- connections, errors, transactions --------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self._path), timeout=self._timeout, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except BaseException:
                conn.close()
                raise
            self._local.conn = conn
        return conn

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn sqlite3 errors into ``StoreError`` messages a user can act on."""
        where = f"The run database {self._path}"
        try:
            yield
        except sqlite3.OperationalError as exc:
            msg = str(exc).lower()
            if "locked" in msg or "busy" in msg:
                raise StoreLockedError(
                    f"{where} is locked by another program (perhaps a second Samplescope window). "
                    "Close it or try again in a moment."
                ) from exc
            if "unable to open" in msg or "readonly" in msg or "read-only" in msg or "disk i/o" in msg:
                raise StoreError(
                    f"{where} could not be opened for writing ({exc}). Check that its folder exists, "
                    "that you may write to it and that the disk is not full."
                ) from exc
            if "malformed" in msg or "not a database" in msg:
                raise StoreCorruptError(self._corrupt_message(exc)) from exc
            raise StoreError(f"{where} could not {action} ({exc}).") from exc
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError) as exc:
            raise StoreError(f"{where} could not {action} ({exc}).") from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed", ...
            raise StoreCorruptError(self._corrupt_message(exc)) from exc
        except UnicodeError as exc:  # never a damaged file: text that is not valid Unicode
            raise StoreError(f"{where} could not {action}: some text is not valid Unicode ({getattr(exc, 'reason', exc)}).") from exc

    def _corrupt_message(self, exc: BaseException) -> str:
        return (
            f"The run database {self._path} is damaged ({exc}). Close Samplescope and move the file "
            "somewhere else (or delete it); a new, empty database will be created."
        )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        row = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if row is not None:
            version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            if version is not None and version > SCHEMA_VERSION:
                raise StoreError(
                    f"The run database {self._path} was written by a newer Samplescope "
                    f"(schema {version}, this one knows {SCHEMA_VERSION}). Update Samplescope, or "
                    "move the file away to start a new history."
                )
            if version == SCHEMA_VERSION:
                return
        with self._tx() as c:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            # version 2 -> 3: the status and owner columns (CREATE TABLE IF NOT EXISTS kept the old tables)
            for table, column, decl in (("runs", "status", "TEXT NOT NULL DEFAULT 'done'"), ("runs", "owner", "TEXT"),
                                        ("experiments", "owner", "TEXT")):
                have = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    c.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            c.execute("DELETE FROM schema_version")
            c.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        """Close the calling thread's connection (the store reopens one if used again)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs -------------------------------------------------------------------------------

    def save_run(
        self,
        trace: Trace,
        model_path: str | None,
        model_name: str,
        *,
        model_sha256: str | None = None,
    ) -> int:
        """Save ``trace`` (prompt, settings, steps, how it finished) and return its id, which
        is also set as ``trace.run_id``. A trace that already has a ``run_id`` still in the
        store is rewritten in place (same id and ``created_at``); otherwise a new run is added.

        ``model_size`` is read from ``model_path`` when it is a file. ``model_sha256`` is the
        given value, else the cached hash if ``sha256_of`` already hashed this exact file;
        saving never hashes a model file itself (that can take seconds on the GUI thread).
        """
        finished = trace.finished
        text = finished.text if finished is not None else trace.text
        finished_json = None
        if finished is not None:
            fd = finished_to_dict(finished) or {}
            fd.pop("text", None)  # kept in the text column
            fd.pop("tokens_per_s", None)  # derived
            finished_json = _js(fd)
        size: int | None = None
        sha = model_sha256
        if model_path and os.path.isfile(model_path):
            try:
                size = os.stat(model_path).st_size
            except OSError:
                size = None
            if sha is None:
                sha = self.cached_sha256(model_path)
        steps = [(i, _js(s.to_dict())) for i, s in enumerate(trace.steps)]
        values = (
            clean_text(model_name or trace.model_name),
            _scrub_location(model_path),
            size,
            sha,
            clean_text(trace.prompt),
            clean_text(text),
            _js(trace.settings.to_dict()),
            trace.settings.seed,
            len(trace.steps),
            finished.tokens_per_s if finished is not None else None,
            finished.reason if finished is not None else None,
            int(trace.estimated),
            finished_json,
        )
        with self._errors("save the run"), self._tx() as c:
            run_id = None
            if trace.run_id is not None:
                exists = c.execute("SELECT 1 FROM runs WHERE id = ?", (trace.run_id,)).fetchone()
                if exists:
                    run_id = trace.run_id
                    c.execute(
                        "UPDATE runs SET model_name = ?, model_path = ?, model_size = ?, model_sha256 = ?,"
                        " prompt = ?, text = ?, settings_json = ?, seed = ?, n_tokens = ?, tokens_per_s = ?,"
                        " finish_reason = ?, estimated = ?, finished_json = ? WHERE id = ?",
                        values + (run_id,),
                    )
                    c.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
            if run_id is None:
                created = datetime.now(timezone.utc).isoformat(timespec="microseconds")
                cur = c.execute(
                    "INSERT INTO runs (created_at, model_name, model_path, model_size, model_sha256,"
                    " prompt, text, settings_json, seed, n_tokens, tokens_per_s, finish_reason,"
                    " estimated, finished_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (created,) + values,
                )
                run_id = _rowid(cur)
            c.executemany(
                "INSERT INTO steps (run_id, idx, json) VALUES (?, ?, ?)",
                [(run_id, i, js) for i, js in steps],
            )
        trace.run_id = run_id
        return run_id

    def list_runs(self, limit: int = 200) -> list[RunSummary]:
        """The newest ``limit`` runs, newest first."""
        with self._errors("list the saved runs"):
            rows = self._conn().execute(
                "SELECT id, created_at, model_name, substr(prompt, 1, ?), n_tokens, finish_reason,"
                " tokens_per_s FROM runs ORDER BY created_at DESC, id DESC LIMIT ?",
                (PREVIEW_CHARS * 4, int(limit)),
            ).fetchall()
        return [
            RunSummary(
                id=r[0], created_at=r[1], model_name=r[2], prompt_preview=_preview(r[3] or ""),
                n_tokens=r[4], finish_reason=r[5], tokens_per_s=r[6],
            )
            for r in rows
        ]

    def load_run(self, run_id: int) -> Trace:
        """The saved run as a ``Trace`` (steps, settings, finished, ``run_id``).
        ``RunNotFoundError`` if there is no such run."""
        with self._errors("load the run"):
            conn = self._conn()
            row = conn.execute(
                "SELECT model_name, prompt, text, settings_json, finished_json FROM runs WHERE id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise RunNotFoundError(f"There is no saved run with id {run_id}; it may have been deleted.")
            model_name, prompt, text, settings_json, finished_json = row
            step_rows = conn.execute(
                "SELECT json FROM steps WHERE run_id = ? ORDER BY idx", (run_id,)
            ).fetchall()
        try:
            settings = SamplerSettings.from_dict(loads_json(settings_json))
            finished = None
            if finished_json is not None:
                fd = loads_json(finished_json)
                fd["text"] = text
                finished = finished_from_dict(fd)
            trace = Trace(prompt=prompt, settings=settings, model_name=model_name, finished=finished)
            trace.extend(Step.from_dict(loads_json(js)) for (js,) in step_rows)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordUnreadableError(
                f"Run #{run_id} could not be opened: a stored value of it is unreadable ({type(exc).__name__}: "
                f"{exc}). The rest of the history is not affected; you may delete this run.") from None
        trace.run_id = run_id
        return trace

    def delete_run(self, run_id: int) -> bool:
        """Delete a run and its steps; ``False`` if there was no such run."""
        with self._errors("delete the run"), self._tx() as c:
            c.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
            cur = c.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            return cur.rowcount > 0

    # -- runs saved as they are made ---------------------------------------------------------

    def start_run(self, head: RunHead) -> int:
        """Add a run with no steps yet, status "running", owned by this process; returns its
        id. Steps follow with ``append_steps``, the end with ``finish_run``."""
        size = sha = None
        path = head.model_path
        if path and os.path.isfile(path):
            try:
                size = os.stat(path).st_size
            except OSError:
                size = None
            sha = head.model_sha256 or self.cached_sha256(path)
        created = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        with self._errors("save the run"), self._tx() as c:
            cur = c.execute(
                "INSERT INTO runs (created_at, model_name, model_path, model_size, model_sha256, prompt, text,"
                " settings_json, seed, n_tokens, tokens_per_s, finish_reason, estimated, finished_json, status,"
                " owner) VALUES (?, ?, ?, ?, ?, ?, '', ?, ?, 0, NULL, NULL, 0, NULL, 'running', ?)",
                (created, clean_text(head.model_name), _scrub_location(path), size, sha or head.model_sha256,
                 clean_text(head.prompt), _js(head.settings.to_dict()), head.settings.seed, process_owner()),
            )
            return _rowid(cur)

    def append_steps(self, run_id: int, first_index: int, steps: Sequence[Step]) -> None:
        """Save ``steps`` as steps ``first_index``, ``first_index + 1``, ... of a running run,
        with the text they add; one transaction, so a crash keeps every batch written."""
        if not steps:
            return
        rows = [(run_id, first_index + i, _js(st.to_dict())) for i, st in enumerate(steps)]
        added = clean_text("".join(st.token for st in steps))
        estimated = int(any(st.estimated for st in steps))
        with self._errors("save the run's steps"), self._tx() as c:
            if c.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise RunNotFoundError(f"There is no saved run with id {run_id}; it may have been deleted.")
            c.executemany("INSERT OR REPLACE INTO steps (run_id, idx, json) VALUES (?, ?, ?)", rows)
            c.execute("UPDATE runs SET text = text || ?, n_tokens = MAX(n_tokens, ?), estimated = MAX(estimated, ?)"
                      " WHERE id = ?", (added, first_index + len(steps), estimated, run_id))

    def finish_run(self, run_id: int, finished: Finished | None, *, n_steps: int) -> None:
        """End a running run: how it finished (its text, reason, speed), status "done". Steps
        past ``n_steps`` (left by a rewrite) are removed."""
        fd = finished_to_dict(finished) or {}
        text = fd.pop("text", None)
        fd.pop("tokens_per_s", None)
        with self._errors("save the run"), self._tx() as c:
            cur = c.execute(
                "UPDATE runs SET text = COALESCE(?, text), n_tokens = ?, tokens_per_s = ?, finish_reason = ?,"
                " finished_json = ?, status = 'done', owner = NULL WHERE id = ?",
                (None if text is None else clean_text(text), n_steps,
                 finished.tokens_per_s if finished is not None else None,
                 finished.reason if finished is not None else None, _js(fd) if finished is not None else None, run_id),
            )
            if cur.rowcount == 0:
                raise RunNotFoundError(f"There is no saved run with id {run_id}; it may have been deleted.")
            c.execute("DELETE FROM steps WHERE run_id = ? AND idx >= ?", (run_id, n_steps))

    def mark_interrupted(self) -> tuple[int, int]:
        """Runs and lab runs still "running" whose writing process no longer exists (a crash,
        a kill) become "interrupted", keeping every step and record saved. Returns how many of
        each; rows of live processes (another Samplescope window) are left alone."""
        with self._errors("check for interrupted runs"):
            conn = self._conn()
            runs = [(i, o) for i, o in conn.execute("SELECT id, owner FROM runs WHERE status = 'running'")]
            exps = [(i, o) for i, o in conn.execute("SELECT id, owner FROM experiments WHERE status = 'running'")]
        dead_runs = [i for i, o in runs if not owner_alive(o)]
        dead_exps = [i for i, o in exps if not owner_alive(o)]
        if not dead_runs and not dead_exps:
            return 0, 0
        with self._errors("mark interrupted runs"), self._tx() as c:
            for run_id in dead_runs:
                n = c.execute("SELECT COUNT(*) FROM steps WHERE run_id = ?", (run_id,)).fetchone()[0]
                fd = {"reason": "interrupted", "n_tokens": n, "seconds": 0.0, "prompt_tokens": 0,
                      "reused_tokens": 0, "message": INTERRUPTED_MESSAGE}
                c.execute("UPDATE runs SET status = 'interrupted', finish_reason = 'interrupted', n_tokens = ?,"
                          " finished_json = ?, owner = NULL WHERE id = ? AND status = 'running'",
                          (n, _js(fd), run_id))
            for exp_id in dead_exps:
                c.execute("UPDATE experiments SET status = 'interrupted', owner = NULL"
                          " WHERE id = ? AND status = 'running'", (exp_id,))
        return len(dead_runs), len(dead_exps)

    # -- experiments (lab runs) -------------------------------------------------------------

    def start_experiment(self, kind: str, title: str, params: dict, *, model_name: str,
                         model_path: str | None = None, model_sha256: str | None = None) -> int:
        """Record that a lab run of ``kind`` (e.g. "vs") started; returns its id. ``params`` is
        any JSON-serialisable dict (the knobs, the prompt); it must hold no secret."""
        created = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        with self._errors("save the lab run"), self._tx() as c:
            cur = c.execute(
                "INSERT INTO experiments (created_at, kind, title, model_name, model_path, model_sha256,"
                " params_json, status, owner) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?)",
                (created, kind, clean_text(title), clean_text(model_name), _scrub_location(model_path), model_sha256,
                 _js(params), process_owner()),
            )
            return _rowid(cur)

    def add_record(self, experiment_id: int, record: dict) -> int:
        """Append one record (a JSON-serialisable dict) to a lab run; returns its index. Each
        record is committed at once, so a crash or a Stop keeps everything that arrived."""
        js = _js(record)
        with self._errors("save the lab record"), self._tx() as c:
            if c.execute("SELECT 1 FROM experiments WHERE id = ?", (experiment_id,)).fetchone() is None:
                raise RunNotFoundError(f"There is no lab run with id {experiment_id}; it may have been deleted.")
            idx = c.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM experiment_records WHERE experiment_id = ?",
                            (experiment_id,)).fetchone()[0]
            c.execute("INSERT INTO experiment_records (experiment_id, idx, json) VALUES (?, ?, ?)",
                      (experiment_id, idx, js))
        return int(idx)

    def finish_experiment(self, experiment_id: int, summary: dict | None, status: str = "done") -> None:
        """Store the summary and the final status ("done", "stopped", "failed")."""
        with self._errors("save the lab summary"), self._tx() as c:
            cur = c.execute("UPDATE experiments SET summary_json = ?, status = ?, owner = NULL WHERE id = ?",
                            (None if summary is None else _js(summary), status, experiment_id))
            if cur.rowcount == 0:
                raise RunNotFoundError(f"There is no lab run with id {experiment_id}; it may have been deleted.")

    def list_experiments(self, kind: str | None = None, limit: int = 200) -> list[ExperimentSummary]:
        """The newest lab runs (of ``kind``, or all), newest first."""
        where, args = ("WHERE kind = ?", (kind,)) if kind else ("", ())
        with self._errors("list the lab runs"):
            rows = self._conn().execute(
                "SELECT e.id, e.created_at, e.kind, e.title, e.model_name, e.status,"
                " (SELECT COUNT(*) FROM experiment_records r WHERE r.experiment_id = e.id)"
                f" FROM experiments e {where} ORDER BY e.created_at DESC, e.id DESC LIMIT ?",
                args + (int(limit),),
            ).fetchall()
        return [ExperimentSummary(*r) for r in rows]

    def load_experiment(self, experiment_id: int) -> Experiment:
        """A lab run with all its records; ``RunNotFoundError`` if there is none."""
        with self._errors("load the lab run"):
            conn = self._conn()
            row = conn.execute(
                "SELECT id, created_at, kind, title, model_name, model_path, model_sha256, status,"
                " params_json, summary_json FROM experiments WHERE id = ?", (experiment_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(f"There is no lab run with id {experiment_id}; it may have been deleted.")
            recs = conn.execute("SELECT json FROM experiment_records WHERE experiment_id = ? ORDER BY idx",
                                (experiment_id,)).fetchall()
        try:
            return Experiment(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7],
                              params=loads_json(row[8]),
                              records=tuple(loads_json(js) for (js,) in recs),
                              summary=None if row[9] is None else loads_json(row[9]))
        except ValueError as exc:
            raise RecordUnreadableError(
                f"Lab run #{experiment_id} could not be opened: a stored record of it is unreadable ({exc}). "
                "The rest of the history is not affected; you may delete this lab run.") from None

    def delete_experiment(self, experiment_id: int) -> bool:
        """Delete a lab run and its records; ``False`` if there was none."""
        with self._errors("delete the lab run"), self._tx() as c:
            c.execute("DELETE FROM experiment_records WHERE experiment_id = ?", (experiment_id,))
            return c.execute("DELETE FROM experiments WHERE id = ?", (experiment_id,)).rowcount > 0

    # -- model hashes -----------------------------------------------------------------------

    def cached_sha256(self, path: str | os.PathLike[str]) -> str | None:
        """The cached SHA-256 of ``path`` if the file's size and mtime still match, else None.
        Never reads the file."""
        real = os.path.realpath(path)
        try:
            st = os.stat(real)
        except OSError:
            return None
        with self._errors("read the model hash cache"):
            row = self._conn().execute(
                "SELECT sha256 FROM model_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
                (real, st.st_size, st.st_mtime_ns),
            ).fetchone()
        return row[0] if row else None

    def sha256_of(self, path: str | os.PathLike[str], progress: ProgressCallback | None = None) -> str:
        """The hex SHA-256 of the file at ``path``, read once per (path, size, mtime) and cached.

        On a cache miss the file is read in chunks and ``progress(done_bytes, total_bytes)``
        is called after each one (an exception raised by ``progress`` aborts the hashing).
        On a hit nothing is read and ``progress`` is not called. Raises ``OSError`` if the
        file cannot be read.
        """
        real = os.path.realpath(path)
        before = os.stat(real)
        cached = self.cached_sha256(real)
        if cached is not None:
            return cached
        h = hashlib.sha256()
        total = before.st_size
        done = 0
        with open(real, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                h.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if progress is not None and total == 0:
            progress(0, 0)
        digest = h.hexdigest()
        after = os.stat(real)
        if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
            with self._errors("save the model hash"), self._tx() as c:
                c.execute(
                    "INSERT OR REPLACE INTO model_hashes (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                    (real, before.st_size, before.st_mtime_ns, digest),
                )
        return digest
