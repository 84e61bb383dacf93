from __future__ import annotations

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
