"""Where Samplescope keeps its files, and how it writes them safely.

Owns: the per-user directories (``config_dir``, ``data_dir``, ``cache_dir``) and the safe
writes ``atomic_write_text`` and ``atomic_path`` (every file Samplescope writes for the user:
exports, settings, task and concept files, plots). Any thread may call these (they only touch the file system).
Qt-free.

Each directory comes from platformdirs (appname ``samplescope``) unless an environment
variable names another one; tests set these so they never touch the user's real files:

=================  ==========================  ============================
function           environment variable        holds
=================  ==========================  ============================
``config_dir()``   ``SAMPLESCOPE_CONFIG_DIR``  settings.json
``data_dir()``     ``SAMPLESCOPE_DATA_DIR``    runs.sqlite3 (the run store)
``cache_dir()``    ``SAMPLESCOPE_CACHE_DIR``   disposable files
=================  ==========================  ============================

A directory is created (with its parents) the first time it is asked for.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = [
    "APP_NAME",
    "CONFIG_ENV",
    "DATA_ENV",
    "CACHE_ENV",
    "config_dir",
    "data_dir",
    "cache_dir",
    "atomic_write_text",
    "atomic_path",
]

APP_NAME = "samplescope"
CONFIG_ENV = "SAMPLESCOPE_CONFIG_DIR"
DATA_ENV = "SAMPLESCOPE_DATA_DIR"
CACHE_ENV = "SAMPLESCOPE_CACHE_DIR"


def _resolve(env_var: str, kind: str) -> Path:
    override = os.environ.get(env_var, "").strip()
    if override:
        path = Path(override).expanduser()
    else:
        import platformdirs  # lazy: only needed when no override is set

        finder = {
            "config": platformdirs.user_config_dir,
            "data": platformdirs.user_data_dir,
            "cache": platformdirs.user_cache_dir,
        }[kind]
        path = Path(finder(APP_NAME, appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_dir() -> Path:
    """The directory for settings (``$SAMPLESCOPE_CONFIG_DIR`` if set), created on demand."""
    return _resolve(CONFIG_ENV, "config")


def data_dir() -> Path:
    """The directory for the run store (``$SAMPLESCOPE_DATA_DIR`` if set), created on demand."""
    return _resolve(DATA_ENV, "data")


def cache_dir() -> Path:
    """The directory for disposable files (``$SAMPLESCOPE_CACHE_DIR`` if set), created on demand."""
    return _resolve(CACHE_ENV, "cache")


def atomic_write_text(path: str | os.PathLike[str], text: str, *, newline: str | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that readers see either the old file or the new
    one, never half of it: write a temporary file in the same directory, flush it to disk,
    then ``os.replace`` it over ``path``. Raises ``OSError`` (the old file is left intact)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline=newline) as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A temporary path beside ``path`` (same extension, so writers that pick a format by it
    still do) to write the whole file to; when the block ends without an exception it replaces
    ``path``, otherwise it is removed and ``path`` is left as it was. For writers that want a
    file name rather than text (image exporters, SVG generators)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix or ".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield tmp
        if os.path.getsize(tmp) == 0 and target.suffix.lower() in (".png", ".svg", ".jpg", ".jpeg", ".bmp"):
            raise OSError(f"nothing was written to {target.name}")
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
