"""The run store: every finished generation, kept in SQLite at ``data_dir()/runs.sqlite3``.

Owns: ``RunStore`` (the database file, its schema and its version), ``RunSummary``, the
model-file SHA-256 cache and the ``StoreError`` tree. Used on the GUI thread (the
controller saves a run when it finishes; the history panel lists, loads and deletes runs).
Each thread that calls the store gets its own connection (sqlite3's ``check_same_thread``
stays on), so ``sha256_of`` may also be run on a worker. Qt-free.

Schema (version ``SCHEMA_VERSION``, recorded in ``schema_version``)::

    runs(id, created_at ISO-8601 UTC, model_name, model_path, model_size, model_sha256,
         prompt, text, settings_json, seed, n_tokens, tokens_per_s, finish_reason,
         estimated, finished_json)
    steps(run_id, idx, json)                 -- one row per Step, json = Step.to_dict()
    model_hashes(path, size, mtime_ns, sha256)
    experiments(id, created_at, kind, title, model_name, model_path, model_sha256,
                params_json, summary_json, status)         -- a lab run (VS comparison, ...)
    experiment_records(experiment_id, idx, json)             -- one row per record, as it arrives

Version 1 databases (no experiment tables) are upgraded in place when opened.
The journal is WAL, so reading the history never waits for a save. Nothing secret is
stored: a remote ``model_path`` that is a URL loses its user name, password and query string.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from app.core.export import finished_from_dict, finished_to_dict
from app.core.paths import data_dir
from app.core.trace import Trace
from backends.base import SamplerSettings, Step

__all__ = [
    "RunStore",
    "RunSummary",
    "ExperimentSummary",
    "Experiment",
    "StoreError",
    "StoreCorruptError",
    "StoreLockedError",
    "RunNotFoundError",
    "SCHEMA_VERSION",
    "DB_FILE",
    "PREVIEW_CHARS",
]

SCHEMA_VERSION = 2
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
    finished_json TEXT
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
    status        TEXT    NOT NULL DEFAULT 'running'
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
    params: dict
    records: tuple
    summary: dict | None


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

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout: float = 2.0) -> None:
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
        except ValueError as exc:  # a stored JSON value that does not parse
            raise StoreCorruptError(self._corrupt_message(exc)) from exc

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
            # Future migrations go here (version < SCHEMA_VERSION).
        with self._tx() as c:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
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
            finished_json = json.dumps(fd, ensure_ascii=False)
        size: int | None = None
        sha = model_sha256
        if model_path and os.path.isfile(model_path):
            try:
                size = os.stat(model_path).st_size
            except OSError:
                size = None
            if sha is None:
                sha = self.cached_sha256(model_path)
        steps = [
            (i, json.dumps(s.to_dict(), ensure_ascii=False, separators=(",", ":")))
            for i, s in enumerate(trace.steps)
        ]
        values = (
            model_name or trace.model_name,
            _scrub_location(model_path),
            size,
            sha,
            trace.prompt,
            text,
            json.dumps(trace.settings.to_dict(), ensure_ascii=False),
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
                run_id = int(cur.lastrowid)
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
                settings = SamplerSettings.from_dict(json.loads(settings_json))
                finished = None
                if finished_json is not None:
                    fd = json.loads(finished_json)
                    fd["text"] = text
                    finished = finished_from_dict(fd)
                trace = Trace(prompt=prompt, settings=settings, model_name=model_name, finished=finished)
                trace.extend(Step.from_dict(json.loads(js)) for (js,) in step_rows)
            except (KeyError, TypeError) as exc:
                raise ValueError(f"run {run_id} has an unreadable record: {exc!r}") from exc
        trace.run_id = run_id
        return trace

    def delete_run(self, run_id: int) -> bool:
        """Delete a run and its steps; ``False`` if there was no such run."""
        with self._errors("delete the run"), self._tx() as c:
            c.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
            cur = c.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            return cur.rowcount > 0

    # -- experiments (lab runs) -------------------------------------------------------------

    def start_experiment(self, kind: str, title: str, params: dict, *, model_name: str,
                         model_path: str | None = None, model_sha256: str | None = None) -> int:
        """Record that a lab run of ``kind`` (e.g. "vs") started; returns its id. ``params`` is
        any JSON-serialisable dict (the knobs, the prompt); it must hold no secret."""
        created = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        with self._errors("save the lab run"), self._tx() as c:
            cur = c.execute(
                "INSERT INTO experiments (created_at, kind, title, model_name, model_path, model_sha256,"
                " params_json, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'running')",
                (created, kind, title, model_name, _scrub_location(model_path), model_sha256,
                 json.dumps(params, ensure_ascii=False)),
            )
            return int(cur.lastrowid)

    def add_record(self, experiment_id: int, record: dict) -> int:
        """Append one record (a JSON-serialisable dict) to a lab run; returns its index. Each
        record is committed at once, so a crash or a Stop keeps everything that arrived."""
        js = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
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
            cur = c.execute("UPDATE experiments SET summary_json = ?, status = ? WHERE id = ?",
                            (None if summary is None else json.dumps(summary, ensure_ascii=False), status,
                             experiment_id))
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
            return Experiment(*row[:8], params=json.loads(row[8]),
                              records=tuple(json.loads(js) for (js,) in recs),
                              summary=None if row[9] is None else json.loads(row[9]))

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
