from __future__ import annotations

import pytest

from router.protocol.errors import BadUpstreamResponse
from router.protocol.sse import SSEDecoder, encode_event


def test_events_split_anywhere() -> None:
    raw = (
        encode_event("a", {"x": 1})
        + b": comment\n\n"
        + b"data: one\ndata: two\n\n"
        + encode_event("b", {"y": "\u00e9"})
    )
    for size in (1, 2, 7, len(raw)):
        decoder = SSEDecoder()
        events = []
        for i in range(0, len(raw), size):
            events += decoder.feed(raw[i : i + size])
        assert [(e.event, e.data) for e in events] == [("a", '{"x":1}'), (None, "one\ntwo"), ("b", '{"y":"\u00e9"}')]


def test_crlf_and_flush_without_trailing_blank_line() -> None:
    decoder = SSEDecoder()
    assert [e.data for e in decoder.feed(b"data: a\r\n\r\ndata: b")] == ["a"]
    assert [e.data for e in decoder.flush()] == ["b"]


def test_crlf_split_between_chunks_keeps_the_event_name() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"event: content_block_delta\r") + decoder.feed(b'\ndata: {"a":1}\r\n\r\n')
    assert [(e.event, e.data) for e in events] == [("content_block_delta", '{"a":1}')]


def test_every_split_of_crlf_text_gives_the_same_events() -> None:
    raw = b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\rdata: 3\n\n"
    whole = [(e.event, e.data) for e in SSEDecoder().feed(raw)]
    assert whole == [("a", "1"), ("b", "2"), (None, "3")]
    for cut in range(1, len(raw)):
        decoder = SSEDecoder()
        assert [(e.event, e.data) for e in decoder.feed(raw[:cut]) + decoder.feed(raw[cut:])] == whole, cut


def test_an_endless_line_is_refused_not_buffered() -> None:
    decoder = SSEDecoder(max_line=1000)
    decoder.feed(b"data: " + b"x" * 600)
    with pytest.raises(BadUpstreamResponse, match="line over 1000"):
        decoder.feed(b"x" * 600)


def test_an_endless_event_is_refused() -> None:
    decoder = SSEDecoder(max_line=100, max_event=1000)
    with pytest.raises(BadUpstreamResponse, match="event over 1000"):
        for _ in range(30):
            decoder.feed(b"data: " + b"y" * 50 + b"\n")


def test_long_lines_in_many_small_chunks_are_joined_once() -> None:
    decoder = SSEDecoder()
    line = "z" * 300_000
    events = []
    for i in range(0, len(line), 1000):
        events += decoder.feed(("data: " if i == 0 else "").encode() + line[i : i + 1000].encode())
    events += decoder.feed(b"\n\n")
    assert [e.data for e in events] == [line]
