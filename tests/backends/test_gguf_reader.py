"""The GGUF header reader (backends/gguf_header.py) that check_gguf and the model discovery share: the
small metadata values it keeps, what it skips, the tensor data's extent it computes from ggml's block
sizes (checked against the library), and the real embedded model read as llama.cpp reads it."""

from __future__ import annotations

import ctypes

import pytest

from backends.base import ModelLoadError
from backends.gguf_header import GGML_TYPE_SIZES, MAX_KEPT_STRING, read_header, tensor_nbytes
from tests.gguf_factory import F32, U32, Arr, INT32, STRING, Typed, gguf_bytes, header


def test_scalars_and_short_strings_are_kept_arrays_and_long_strings_skipped(tmp_path):
    kv = {
        "general.architecture": "llama",
        "general.name": "caf\u00e9 \u2603",
        "llama.context_length": U32(8192),
        "general.file_type": U32(15),
        "x.float": F32(0.5),
        "x.bool": True,
        "x.i64": Typed(11, -7),
        "x.tokens": ["a", "bb", "ccc"],
        "x.nested": Arr(9, [Arr(INT32, [1, 2]), Arr(INT32, [3])]),
        "x.template": "t" * (MAX_KEPT_STRING + 1),
        "x.after": "still read after everything skipped",
    }
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes(kv, [("w", [8], 0, 0)], data_size=32))
    h = read_header(path)
    assert h.metadata == {"general.architecture": "llama", "general.name": "caf\u00e9 \u2603",
                          "llama.context_length": 8192, "general.file_type": 15, "x.float": 0.5, "x.bool": True,
                          "x.i64": -7, "x.after": "still read after everything skipped"}
    assert (h.version, h.n_tensors, h.file_size, h.data_end) == (3, 1, path.stat().st_size, path.stat().st_size)
    assert h.text("llama.context_length") is None and h.integer("llama.context_length") == 8192
    assert h.integer("x.bool") is None  # a bool is not a count


def test_invalid_utf8_in_a_name_is_replaced_not_raised(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes({"general.name": Typed(STRING, b"bad \xff\xfe name")}))
    assert read_header(path).text("general.name") == "bad \ufffd\ufffd name"


def test_a_file_cut_inside_its_last_tensor_is_truncated(tmp_path):
    # the tensor table is whole; only the data of the last tensor is short (an unfinished download)
    data = gguf_bytes({"general.architecture": "llama"}, [("a", [32], 8, 0), ("b", [256, 2], 12, 64)],
                      data_size=64 + 2 * 144)
    path = tmp_path / "cut.gguf"
    path.write_bytes(data)
    assert read_header(path).data_end == len(data)
    path.write_bytes(data[:-1])
    with pytest.raises(ModelLoadError, match="cut.gguf is truncated: its tensor data ends"):
        read_header(path)
    assert read_header(path, tensors=False).metadata == {"general.architecture": "llama"}


def test_alignment_is_honoured_and_checked(tmp_path):
    kv = {"general.alignment": U32(64)}
    raw = header(kv, [("w", [4], 0, 0)])
    path = tmp_path / "a.gguf"
    path.write_bytes(raw + b"\0" * ((-len(raw)) % 64) + b"\0" * 16)
    assert read_header(path).data_end == path.stat().st_size
    path.write_bytes(header({"general.alignment": U32(48)}, [("w", [4], 0, 0)]) + b"\0" * 80)
    with pytest.raises(ModelLoadError, match="power of two"):
        read_header(path)


def test_a_header_that_cannot_be_mapped_is_read_in_one_bounded_read(tmp_path, monkeypatch):
    import backends.gguf_header as gh

    def no_mmap(*_a, **_k):
        raise OSError("not on this file system")

    monkeypatch.setattr(gh.mmap, "mmap", no_mmap)
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes({"general.architecture": "llama"}, [("w", [4], 0, 0)], data_size=16))
    assert read_header(path).text("general.architecture") == "llama"
    monkeypatch.setattr(gh, "FALLBACK_READ", 30)  # a header longer than what may be read
    with pytest.raises(ModelLoadError, match="larger than"):
        read_header(path)


def test_missing_folder_and_empty(tmp_path):
    with pytest.raises(ModelLoadError, match="No file"):
        read_header(tmp_path / "nope.gguf")
    with pytest.raises(ModelLoadError, match="folder"):
        read_header(tmp_path)
    (tmp_path / "e.gguf").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="e.gguf is empty"):
        read_header(tmp_path / "e.gguf")


def test_block_sizes_are_ggml_s():
    import llama_cpp._ggml as ggml

    lib = ggml.libggml
    lib.ggml_type_size.restype, lib.ggml_type_size.argtypes = ctypes.c_size_t, [ctypes.c_int]
    lib.ggml_blck_size.restype, lib.ggml_blck_size.argtypes = ctypes.c_int64, [ctypes.c_int]
    known = {t for t in range(max(GGML_TYPE_SIZES) + 1) if lib.ggml_blck_size(t) > 0}
    assert known == set(GGML_TYPE_SIZES)
    for t, (block, size) in GGML_TYPE_SIZES.items():
        assert (lib.ggml_blck_size(t), lib.ggml_type_size(t)) == (block, size), t
    assert tensor_nbytes(12, (512, 3)) == 2 * 144 * 3  # Q4_K: 256 weights in 144 bytes
    assert tensor_nbytes(4, (8,)) is None  # a removed type


def test_the_embedded_model_reads_as_llama_cpp_reads_it(embedded_model, local_backend):
    h = read_header(embedded_model)
    assert h.data_end == embedded_model.stat().st_size  # the tensor table accounts for every byte
    theirs = local_backend.metadata  # llama.cpp's own reading, every value as text
    assert set(h.metadata) <= set(theirs)
    compared = 0
    for key, value in h.metadata.items():
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            assert theirs[key] == str(value), key
            compared += 1
    assert compared >= 20
    info = local_backend.info
    assert (h.text("general.architecture"), h.text("general.size_label")) == (info.architecture, info.size_label)
    assert h.integer(f"{info.architecture}.context_length") == info.n_ctx_train
