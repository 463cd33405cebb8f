"""Broken and hostile GGUF files: every one is refused with a ``ModelLoadError`` that names the
file, by ``check_gguf`` before llama.cpp reads it and by the backend; never another exception
(a ``RecursionError`` from 5,000 nested arrays was one), never a crash."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.base import ModelLoadError
from backends.models import MAX_ARRAY_NESTING, check_gguf
from tests.gguf_factory import ARRAY, BASIC_KV, INT32, _string, gguf_bytes, header, malformed, nested_arrays

BROKEN = malformed()


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_gguf_refuses_each_broken_header_in_words(tmp_path, name):
    path = tmp_path / "broken.gguf"
    path.write_bytes(BROKEN[name])
    if name == "no tensors at all":  # a well-formed header: llama.cpp decides (next test)
        check_gguf(path)
        return
    with pytest.raises(ModelLoadError, match="broken.gguf") as info:
        check_gguf(path)
    assert "Traceback" not in str(info.value)


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_the_backend_refuses_each_broken_file(tmp_path, name):
    from backends.llama_local import LlamaCppBackend

    path = tmp_path / "broken.gguf"
    path.write_bytes(BROKEN[name])
    with pytest.raises(ModelLoadError):
        LlamaCppBackend(path, n_ctx=64, n_threads=1)


def test_nesting_within_the_limit_is_read(tmp_path):
    path = tmp_path / "nested.gguf"
    raw = bytearray(header({}, n_kv=1)) + _string("ok") + struct.pack("<I", ARRAY) + nested_arrays(MAX_ARRAY_NESTING)
    path.write_bytes(bytes(raw) + b"\0" * 32)
    check_gguf(path)
    deeper = bytearray(header({}, n_kv=1)) + _string("no") + struct.pack("<I", ARRAY)
    deeper += nested_arrays(MAX_ARRAY_NESTING + 1)
    path.write_bytes(bytes(deeper) + b"\0" * 32)
    with pytest.raises(ModelLoadError, match="nested more than"):
        check_gguf(path)


_VALID = gguf_bytes({**BASIC_KV, "tokenizer.ggml.tokens": ["a", "bb", "ccc"], "list": [1, 2, 3]},
                    [("t", [4, 2], 0, 0)], data_size=64)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, len(_VALID)), edits=st.lists(st.tuples(st.integers(0, len(_VALID) - 1),
                                                                st.integers(0, 255)), max_size=6))
def test_any_damage_to_a_header_is_a_model_load_error_or_harmless(tmp_path, cut, edits):
    data = bytearray(_VALID[:cut] if cut < len(_VALID) else _VALID)
    for pos, byte in edits:
        if pos < len(data):
            data[pos] = byte
    path = tmp_path / "fuzzed.gguf"
    path.write_bytes(bytes(data))
    try:
        check_gguf(path)
    except ModelLoadError as exc:
        assert "fuzzed.gguf" in str(exc)


def test_an_int32_array_is_skipped_by_its_size(tmp_path):
    raw = header({}, n_kv=1) + _string("xs") + struct.pack("<IIQ", ARRAY, INT32, 3) + struct.pack("<3i", 1, 2, 3)
    path = tmp_path / "ints.gguf"
    path.write_bytes(raw + b"\0" * 32)
    check_gguf(path)
