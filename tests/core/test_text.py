"""Text from outside made valid Unicode (``backends.text``), and JSON that cannot crash a parser."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.text import SurrogateJoiner, Utf8Stream, clean_json, clean_text, loads_json


def test_clean_text_joins_pairs_restores_escaped_bytes_and_replaces_lone_halves():
    assert clean_text("a\ud83d\ude00b") == "a\U0001F600b"
    assert clean_text(os.fsdecode(b"caf\xc3\xa9")) == "café"  # a valid UTF-8 argument, decoded
    assert clean_text(os.fsdecode(b"bad \xff byte")) == "bad \ufffd byte"
    assert clean_text("lone \ud800 high") == "lone \ufffd high"
    assert clean_text("plain") == "plain" and clean_text(None) == ""


@given(st.lists(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=40).map("".join))
def test_clean_text_always_encodes_and_keeps_valid_text(text):
    out = clean_text(text)
    out.encode("utf-8")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert out == text


def test_clean_json_cleans_keys_and_values():
    assert clean_json({"k\ud800": ["v\udcff", 1, None]}) == {"k\ufffd": ["v\ufffd", 1, None]}


def test_a_pair_split_across_pieces_is_joined():
    j = SurrogateJoiner()
    assert [j.push("hi \ud83d"), j.push("\ude00!"), j.push("\ud83d"), j.flush()] == ["hi ", "\U0001F600!", "", "\ufffd"]
    u = Utf8Stream()
    assert u.push("é".encode()[:1]) == "" and u.push("é".encode()[1:]) == "é"
    assert u.push_text("\ud83d") == "" and u.push_text("\ude00") == "\U0001F600"


@pytest.mark.parametrize("bad", ["[" * 50_000 + "]" * 50_000, '{"a":' * 100_000, b"\xff\xfe{}", "{bad"])
def test_loads_json_raises_value_error_only(bad):
    with pytest.raises(ValueError):
        loads_json(bad)


def test_tokenize_takes_any_text(local_backend):
    tokens = local_backend.tokenize("lone \ud800 and \udcff bytes")
    assert tokens and local_backend.tokenize("pair \ud83d\ude00") == local_backend.tokenize("pair \U0001F600")
