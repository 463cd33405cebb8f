"""The one reader of GGUF headers: what a file says about itself, without loading the model.

Owns: ``read_header`` (magic, version, counts, the small metadata values, the tensor table's
extent), ``read_tensor_table`` (the same and every tensor's name, type, shape and file offset:
the layer lens finds the output head's weights with it) and its guards against damaged or hostile headers: every length is checked against the
file's size before it is used, counts are capped, nested arrays are walked with an explicit
stack (never recursion) and refused deeper than ``MAX_ARRAY_NESTING``, long strings and every
array are skipped rather than kept, and no byte of tensor data is read. The header is read
through a memory map (only the pages of the header are touched), or, where a file cannot be
mapped, by one bounded read of its first ``FALLBACK_READ`` bytes. Every failure is a
``ModelLoadError`` whose one-line message names the file and says what is wrong.

Used by ``backends.models.check_gguf`` (before llama.cpp sees a file) and by
``backends.discovery`` (the model picker, ``samplescope models``). Qt-free; runs on whichever
thread calls it (the model worker, the picker's discovery worker, the command line's main thread).
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from .base import ModelLoadError

__all__ = ["GGUFHeader", "TensorInfo", "read_header", "read_tensor_table", "MAX_ARRAY_NESTING", "MAX_KEPT_STRING",
           "GGML_TYPE_SIZES", "tensor_nbytes"]

Value = Union[str, int, float, bool]

#: GGUF allows arrays of arrays; llama.cpp's own reader takes no nesting at all. Deeper than
#: this is a damaged (or hostile) header, refused before it costs memory or stack.
MAX_ARRAY_NESTING = 8
#: strings longer than this (chat templates, licences) are skipped, not kept in ``metadata``
MAX_KEPT_STRING = 4096
_MAX_KEY = 1024
_MAX_KV = 1_000_000
_MAX_TENSORS = 10_000_000
_MAX_DIMS = 8
#: a file that cannot be memory-mapped is read this far at most
FALLBACK_READ = 64 << 20

_STRING, _ARRAY = 8, 9
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}
_SCALAR_SIZES = {t: struct.calcsize(f) for t, f in _SCALAR_FORMATS.items()}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

#: ggml type -> (elements per block, bytes per block), as ggml's ``ggml_blck_size`` and
#: ``ggml_type_size`` give them (tests/backends/test_gguf_reader.py compares with the library);
#: the removed types (4, 5, 31-33, 36-38) are absent
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
    42: (64, 18),
}


def tensor_nbytes(ggml_type: int, dims: tuple[int, ...]) -> int | None:
    """The bytes of a tensor's data (None for a type this table does not know)."""
    sizes = GGML_TYPE_SIZES.get(ggml_type)
    if sizes is None:
        return None
    block, type_size = sizes
    n = type_size * (dims[0] // block if dims else 1)
    for d in dims[1:]:
        n *= d
    return n


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file's header says. ``metadata`` holds the scalar values and the strings up to
    ``MAX_KEPT_STRING`` bytes (arrays and longer strings are skipped); ``data_end`` is where the
    tensor data ends by the tensor table (its offsets and sizes after the aligned data start)."""

    version: int
    n_tensors: int
    file_size: int
    data_end: int
    metadata: dict[str, Value] = field(default_factory=dict)

    def get(self, key: str, default: Value | None = None) -> Value | None:
        return self.metadata.get(key, default)

    def text(self, key: str) -> str | None:
        """The string value of ``key`` (None when absent or not a string)."""
        v = self.metadata.get(key)
        return v if isinstance(v, str) else None

    def integer(self, key: str) -> int | None:
        """The integer value of ``key`` (None when absent or not an integer)."""
        v = self.metadata.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None


class _Cursor:
    """A position in the header's bytes, every read checked against what is there."""

    __slots__ = ("buf", "pos", "end", "size", "name")

    def __init__(self, buf, end: int, size: int, name: str) -> None:
        self.buf = buf
        self.pos = 0
        self.end = end  # bytes available (the file's size, or the fallback read)
        self.size = size  # the file's size
        self.name = name

    def short(self) -> ModelLoadError:
        if self.end < self.size:
            return ModelLoadError(f"{self.name} has a GGUF header larger than {FALLBACK_READ >> 20} MiB "
                                  "in a file that cannot be memory-mapped.")
        return ModelLoadError(f"{self.name} is truncated: the GGUF header ends early.")

    def corrupt(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"{self.name} has a corrupt GGUF header ({what}).")

    def take(self, n: int) -> int:
        p = self.pos
        if p + n > self.end:
            raise self.short()
        self.pos = p + n
        return p

    def u32(self) -> int:
        return _U32.unpack_from(self.buf, self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack_from(self.buf, self.take(8))[0]

    def string_length(self) -> int:
        n = self.u64()
        if n > self.size:
            raise self.corrupt("string length")
        return n

    def string(self, limit: int) -> str | None:
        """The next string, or None (skipped) when it is longer than ``limit`` bytes."""
        n = self.string_length()
        p = self.take(n)
        if n > limit:
            return None
        return bytes(self.buf[p:p + n]).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` strings (a vocabulary: the one loop that runs 100,000s of times)."""
        buf, pos, end, size, unpack = self.buf, self.pos, self.end, self.size, _U64.unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise self.short()
            (n,) = unpack(buf, pos)
            if n > size:
                raise self.corrupt("string length")
            pos += 8 + n
        if pos > end:
            raise self.short()
        self.pos = pos

    def skip_value(self, vtype: int) -> None:
        """Skip one value of type ``vtype``. Nested arrays are walked with an explicit stack of
        (element type, elements left), never by recursion, so no header can exhaust the stack."""
        stack: list[list[int]] = []
        while True:
            if vtype == _STRING:
                self.take(self.string_length())
            elif vtype == _ARRAY:
                etype, count = self.u32(), self.u64()
                if count > self.size:
                    raise self.corrupt("array length")
                if etype in _SCALAR_SIZES:
                    self.take(_SCALAR_SIZES[etype] * count)
                elif etype == _STRING:
                    self.skip_strings(count)
                elif etype == _ARRAY:
                    if len(stack) + 1 >= MAX_ARRAY_NESTING:
                        raise self.corrupt(f"arrays nested more than {MAX_ARRAY_NESTING} deep")
                    stack.append([etype, count])
                else:
                    raise self.corrupt(f"unknown array type {etype}")
            elif vtype in _SCALAR_SIZES:
                self.take(_SCALAR_SIZES[vtype])
            else:
                raise self.corrupt(f"unknown value type {vtype}")
            while stack and stack[-1][1] == 0:
                stack.pop()
            if not stack:
                return
            stack[-1][1] -= 1
            vtype = stack[-1][0]


@dataclass(frozen=True)
class TensorInfo:
    """One entry of a GGUF file's tensor table: ``name``, ``ggml_type``, ``dims`` (ggml's order:
    ``dims[0]`` is the row length), ``offset`` (from the file's start, the data section's
    alignment applied) and ``nbytes`` (None for a type ``GGML_TYPE_SIZES`` does not know)."""

    name: str
    ggml_type: int
    dims: tuple[int, ...]
    offset: int
    nbytes: int | None


def _parse(c: _Cursor, tensors: bool, table: list[TensorInfo] | None = None) -> GGUFHeader:
    name = c.name
    if c.end < 4 or bytes(c.buf[:4]) != b"GGUF":
        raise ModelLoadError(
            f"{name} is not a GGUF model (it does not start with the GGUF magic). Samplescope loads "
            "llama.cpp GGUF files; convert other formats with llama.cpp's convert_hf_to_gguf.py."
        )
    if c.end < 24:
        raise ModelLoadError(f"{name} is truncated: the GGUF header is incomplete.")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", c.buf, 4)
    c.pos = 24
    if version not in (2, 3):
        raise ModelLoadError(
            f"{name} uses GGUF version {version}, which this build does not support (expected 2 or 3). "
            "Update llama-cpp-python or re-convert the model."
        )
    if n_kv > _MAX_KV or n_tensors > _MAX_TENSORS:
        raise c.corrupt("implausible counts")
    meta: dict[str, Value] = {}
    for _ in range(n_kv):
        key = c.string(_MAX_KEY)
        vtype = c.u32()
        if vtype in _SCALAR_FORMATS:
            value: Value | None = struct.unpack_from(_SCALAR_FORMATS[vtype], c.buf, c.take(_SCALAR_SIZES[vtype]))[0]
        elif vtype == _STRING:
            value = c.string(MAX_KEPT_STRING)
        else:
            c.skip_value(vtype)
            value = None
        if key is not None and value is not None:
            meta.setdefault(key, value)  # llama.cpp refuses duplicates; the first is the one we show
    data_end = c.pos
    if tensors:
        max_end = 0
        for _ in range(n_tensors):
            n_name = c.string_length()
            p_name = c.take(n_name)
            n_dims = c.u32()
            if n_dims > _MAX_DIMS:
                raise ModelLoadError(f"{name} has a corrupt tensor table.")
            dims = struct.unpack_from(f"<{n_dims}Q", c.buf, c.take(8 * n_dims))
            ggml_type = c.u32()
            offset = c.u64()
            nbytes = tensor_nbytes(ggml_type, dims)
            max_end = max(max_end, offset + (nbytes or 0))
            if table is not None:
                t_name = bytes(c.buf[p_name:p_name + min(n_name, _MAX_KEY)]).decode("utf-8", errors="replace")
                table.append(TensorInfo(t_name, ggml_type, tuple(dims), offset, nbytes))
        data_end = c.pos
        if n_tensors:
            alignment = meta.get("general.alignment", 32)
            if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
                raise c.corrupt("general.alignment is not a power of two")
            start = c.pos + (-c.pos) % alignment
            data_end = start + max_end
            if table is not None:  # offsets from the file's start
                table[:] = [TensorInfo(t.name, t.ggml_type, t.dims, start + t.offset, t.nbytes) for t in table]
        if data_end > c.size:
            raise ModelLoadError(
                f"{name} is truncated: its tensor data ends before the header says it should "
                f"({c.size:,} bytes on disk, {data_end:,} expected). Download or copy the file again."
            )
    return GGUFHeader(version=version, n_tensors=n_tensors, file_size=c.size, data_end=data_end, metadata=meta)


def read_tensor_table(path: str | os.PathLike) -> tuple[GGUFHeader, dict[str, TensorInfo]]:
    """The header of the GGUF file at ``path`` (as ``read_header``) and its tensor table by name
    (the first entry of a duplicated name), with the same checks and errors; no tensor data is read.
    Used by the layer lens (``backends.output_head``) to find the output head's tensors."""
    table: list[TensorInfo] = []
    header = read_header(path, _table=table)
    out: dict[str, TensorInfo] = {}
    for t in table:
        out.setdefault(t.name, t)
    return header, out


def read_header(path: str | os.PathLike, *, tensors: bool = True,
                _table: list[TensorInfo] | None = None) -> GGUFHeader:
    """Read the header of the GGUF file at ``path``: its metadata's small values and (with
    ``tensors``, the default) the tensor table, checking that the file is not shorter than its
    tensors' data. Raises ``ModelLoadError`` with a one-line reason that names the file: missing,
    a folder, unreadable, not GGUF, an unsupported version, truncated, corrupt."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise ModelLoadError(f"{p.name} is empty (0 bytes): not a GGUF model.")
            try:
                buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # a pipe, some network or FUSE file systems
                data = f.read(FALLBACK_READ)
                return _parse(_Cursor(data, len(data), size, p.name), tensors or _table is not None, _table)
            try:
                return _parse(_Cursor(buf, size, size, p.name), tensors or _table is not None, _table)
            finally:
                buf.close()
    except ModelLoadError:
        raise
    except FileNotFoundError:
        raise ModelLoadError(f"No file at {p}. Pick an existing .gguf file (File > Open).") from None
    except IsADirectoryError:
        raise ModelLoadError(f"{p} is a folder, not a GGUF model file.") from None
    except PermissionError:
        raise ModelLoadError(f"Cannot read {p.name}: permission denied.") from None
    except OSError as exc:
        raise ModelLoadError(f"Cannot read {p}: {exc.strerror or exc}") from None
