"""Build GGUF files for tests: valid headers with chosen metadata, and every way to damage one.

``gguf_bytes(kv, tensors)`` writes a GGUF v3 header (magic, version, counts, key/value pairs of
any type, tensor infos) and the tensors' data; ``MALFORMED`` names headers that are broken in
one way each (for ``check_gguf`` and the model loader). Values are typed explicitly with
``U32(...)``, ``F32(...)``, ``Arr(type, items)`` ... or inferred (str, bool, int, float, list).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

# GGUF value types
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_FMT = {UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i", FLOAT32: "<f",
        BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d"}


@dataclass(frozen=True)
class Typed:
    type: int
    value: Any


def U32(v: int) -> Typed:  # noqa: N802
    return Typed(UINT32, v)


def F32(v: float) -> Typed:  # noqa: N802
    return Typed(FLOAT32, v)


@dataclass(frozen=True)
class Arr:
    type: int
    items: list


def _string(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _typed(v: Any) -> tuple[int, bytes]:
    """(type, encoded value without the type tag)."""
    if isinstance(v, Typed):
        if v.type == STRING:
            return STRING, _string(v.value)
        return v.type, struct.pack(_FMT[v.type], v.value)
    if isinstance(v, Arr):
        body = b"".join(_typed(Typed(v.type, x) if not isinstance(x, (Arr, Typed)) else x)[1] for x in v.items)
        return ARRAY, struct.pack("<IQ", v.type, len(v.items)) + body
    if isinstance(v, bool):
        return BOOL, struct.pack("<?", v)
    if isinstance(v, int):
        return UINT32, struct.pack("<I", v)
    if isinstance(v, float):
        return FLOAT32, struct.pack("<f", v)
    if isinstance(v, (str, bytes)):
        return STRING, _string(v)
    if isinstance(v, list):
        t, _ = _typed(v[0]) if v else (INT32, b"")
        return _typed(Arr(t, [x.value if isinstance(x, Typed) else x for x in v]))
    raise TypeError(v)


def header(kv: dict[str, Any], tensors: list[tuple[str, list[int], int, int]] = (), *, version: int = 3,
           n_tensors: int | None = None, n_kv: int | None = None, magic: bytes = b"GGUF") -> bytes:
    """The header: magic, version, counts (the real ones unless given), the pairs, the tensor
    infos ``(name, dims, ggml type, offset)``."""
    out = bytearray(magic + struct.pack("<IQQ", version, len(tensors) if n_tensors is None else n_tensors,
                                        len(kv) if n_kv is None else n_kv))
    for key, value in kv.items():
        t, body = _typed(value)
        out += _string(key) + struct.pack("<I", t) + body
    for name, dims, ggml_type, offset in tensors:
        out += _string(name) + struct.pack("<I", len(dims)) + struct.pack("<" + "Q" * len(dims), *dims)
        out += struct.pack("<IQ", ggml_type, offset)
    return bytes(out)


def gguf_bytes(kv: dict[str, Any], tensors: list[tuple[str, list[int], int, int]] = (), data_size: int = 0,
               **kw) -> bytes:
    """A whole file: the header, padding to 32 bytes, then ``data_size`` bytes of tensor data."""
    h = header(kv, tensors, **kw)
    pad = (-len(h)) % 32
    return h + b"\0" * pad + b"\0" * data_size


def nested_arrays(depth: int) -> bytes:
    """The value bytes of ``depth`` arrays, each holding the next one (the innermost holds one int)."""
    inner = struct.pack("<IQ", INT32, 1) + struct.pack("<i", 7)
    for _ in range(depth - 1):
        inner = struct.pack("<IQ", ARRAY, 1) + inner
    return inner


BASIC_KV = {"general.architecture": "llama", "general.name": "tiny", "llama.context_length": U32(2048)}


def malformed() -> dict[str, bytes]:
    """One damaged file per way to damage a header (name -> bytes)."""
    ok = gguf_bytes(BASIC_KV, [("t", [4], 0, 0)], data_size=16)
    nested = bytearray(header({}, n_kv=1))
    nested += _string("deep") + struct.pack("<I", ARRAY) + nested_arrays(5000)
    return {
        "empty": b"",
        "not gguf": b"PK\x03\x04" + b"\0" * 64,
        "magic only": b"GGUF",
        "truncated counts": b"GGUF" + struct.pack("<I", 3) + b"\0" * 5,
        "version 1": gguf_bytes(BASIC_KV, version=1),
        "version 99": gguf_bytes(BASIC_KV, version=99),
        "huge kv count": header(BASIC_KV, n_kv=2**40),
        "huge tensor count": header(BASIC_KV, n_tensors=2**40),
        "kv count larger than the pairs": gguf_bytes(BASIC_KV, n_kv=10),
        "string longer than the file": header({}, n_kv=1) + _string("k") + struct.pack("<I", STRING)
        + struct.pack("<Q", 2**50),
        "array longer than the file": header({}, n_kv=1) + _string("k") + struct.pack("<IIQ", ARRAY, INT32, 2**50),
        "unknown value type": header({}, n_kv=1) + _string("k") + struct.pack("<I", 77) + b"\0" * 8,
        "unknown array type": header({}, n_kv=1) + _string("k") + struct.pack("<IIQ", ARRAY, 77, 1) + b"\0" * 8,
        "5000 nested arrays": bytes(nested),
        "too many dimensions": header(BASIC_KV, [("t", [1] * 9, 0, 0)]),
        "tensor data past the end": gguf_bytes(BASIC_KV, [("t", [4], 0, 1 << 30)], data_size=16),
        "cut in the middle": ok[: len(ok) // 2],
        "no tensors at all": gguf_bytes(BASIC_KV),
    }


def _skip_value(buf: bytes, pos: int, t: int) -> int:
    """The position after a value of type ``t`` starting at ``pos``."""
    if t == STRING:
        (n,) = struct.unpack_from("<Q", buf, pos)
        return pos + 8 + n
    if t == ARRAY:
        inner, count = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        for _ in range(count):
            pos = _skip_value(buf, pos, inner)
        return pos
    return pos + struct.calcsize(_FMT[t])


def with_metadata(src, dst, kv: dict[str, Any]) -> None:
    """Copy the GGUF ``src`` to ``dst`` with the pairs ``kv`` added to its metadata (the tensor
    data is copied as it is, re-aligned after the longer header: a real model that loads)."""
    import shutil

    with open(src, "rb") as f:
        head = f.read(64 << 20)  # the header of any model we use fits in 64 MiB
    magic, (version, n_tensors, n_kv) = head[:4], struct.unpack_from("<IQQ", head, 4)
    assert magic == b"GGUF"
    pos = 24
    alignment = 32
    for _ in range(n_kv):
        (klen,) = struct.unpack_from("<Q", head, pos)
        key = head[pos + 8: pos + 8 + klen].decode("utf-8")
        pos += 8 + klen
        (t,) = struct.unpack_from("<I", head, pos)
        if key == "general.alignment":
            (alignment,) = struct.unpack_from("<I", head, pos + 4)
        pos = _skip_value(head, pos + 4, t)
    kv_end = pos
    for _ in range(n_tensors):
        (nlen,) = struct.unpack_from("<Q", head, pos)
        pos += 8 + nlen
        (ndims,) = struct.unpack_from("<I", head, pos)
        pos += 4 + 8 * ndims + 4 + 8
    infos_end = pos
    data_start = infos_end + (-infos_end) % alignment
    extra = b"".join(_string(k) + struct.pack("<I", _typed(v)[0]) + _typed(v)[1] for k, v in kv.items())
    new_head = (magic + struct.pack("<IQQ", version, n_tensors, n_kv + len(kv)) + head[24:kv_end] + extra
                + head[kv_end:infos_end])
    new_head += b"\0" * ((-len(new_head)) % alignment)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(new_head)
        fin.seek(data_start)
        shutil.copyfileobj(fin, fout, 16 << 20)
