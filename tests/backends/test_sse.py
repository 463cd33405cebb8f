"""The server-sent-events line parser (backends.sse)."""

from __future__ import annotations

import httpx

from backends.sse import DONE, SSEEvent, iter_sse


def events(text: str, **kw) -> list[SSEEvent]:
    return list(iter_sse(text.split("\n"), **kw))


def test_data_lines_and_done():
    evs = events('data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n')
    assert [e.data for e in evs] == ['{"a": 1}', '{"b": 2}', DONE]
    assert [e.is_done for e in evs] == [False, False, True]
    assert all(e.event == "message" and e.complete for e in evs)


def test_multi_line_data_is_joined_with_newlines():
    evs = events("data: first\ndata: second\ndata:third\n\n")
    assert [e.data for e in evs] == ["first\nsecond\nthird"]


def test_comments_pings_and_unknown_fields_are_ignored():
    evs = events(": ping\n\n:keep-alive\nfoo: bar\ndata: x\n: inside\n\n")
    assert [e.data for e in evs] == ["x"]


def test_event_id_and_retry_fields():
    evs = events("event: error\nid: 7\nretry: 1500\ndata: boom\n\ndata: next\n\n")
    assert evs[0] == SSEEvent("boom", "error", "7", 1500)
    assert evs[1].event == "message" and evs[1].id == "7"  # the last id persists


def test_only_one_space_after_the_colon_is_dropped_and_field_without_colon():
    evs = events("data:  two spaces\n\ndata\n\n")
    assert [e.data for e in evs] == [" two spaces", ""]


def test_blank_lines_without_data_dispatch_nothing():
    assert events("\n\n\nevent: x\n\n") == []


def test_crlf_leftovers_and_bom():
    evs = list(iter_sse(["\ufeffdata: a\r", "\r", "data: b", ""]))
    assert [e.data for e in evs] == ["a", "b"]


def test_an_event_cut_by_the_end_of_the_stream():
    lines = ["data: complete", "", 'data: {"partial": ']
    assert [e.data for e in iter_sse(lines)] == ["complete"]  # the standard drops it
    evs = list(iter_sse(lines, flush_incomplete=True))
    assert [e.data for e in evs] == ["complete", '{"partial": ']
    assert [e.complete for e in evs] == [True, False]


def test_over_httpx_iter_lines_with_mixed_line_endings():
    body = b'data: {"x": 1}\r\n\r\n: ping\n\ndata: a\rdata: b\r\rdata: [DONE]\n\n'
    resp = httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    evs = list(iter_sse(resp.iter_lines()))
    assert [e.data for e in evs] == ['{"x": 1}', "a\nb", "[DONE]"]
