"""Anthropic events → one Message: what a non-streaming client gets from a streamed upstream."""

from __future__ import annotations

import pytest

from router.protocol.aggregate import MessageAggregator
from router.protocol.from_openai import BadUpstreamResponse, StreamTranslator
from router.protocol.sse import SSEDecoder, encode_event


def run(raw: bytes) -> dict:
    aggregator = MessageAggregator()
    for event in SSEDecoder().feed(raw):
        aggregator.feed(event)
    return aggregator.message()


def test_round_trip_through_the_openai_stream_translator() -> None:
    translator = StreamTranslator("m")
    chunks = [
        {"choices": [{"delta": {"reasoning_content": "hm"}}]},
        {"choices": [{"delta": {"content": "Hi "}}]},
        {"choices": [{"delta": {"content": "there"}}]},
        {
            "choices": [
                {"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Read", "arguments": '{"a"'}}]}}
            ]
        },
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}}]},
        {
            "choices": [{"delta": {}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4},
        },
    ]
    raw = b"".join(b"".join(translator.feed(c)) for c in chunks) + b"".join(translator.finish())
    message = run(raw)
    assert message["content"] == [
        {"type": "thinking", "thinking": "hm", "signature": ""},
        {"type": "text", "text": "Hi there"},
        {"type": "tool_use", "id": "c1", "name": "Read", "input": {"a": 1}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"]["output_tokens"] == 4 and message["usage"]["input_tokens"] == 9


def test_llama_style_tool_block_without_input_field() -> None:
    raw = (
        encode_event(
            "message_start",
            {"type": "message_start", "message": {"id": "x", "content": [], "usage": {"input_tokens": 3}}},
        )
        + encode_event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "t", "name": "Read"},
            },
        )
        + encode_event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"file_path": "a.txt"}'},
            },
        )
        + encode_event("content_block_stop", {"type": "content_block_stop", "index": 0})
        + encode_event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 2}},
        )
        + encode_event("message_stop", {"type": "message_stop"})
    )
    message = run(raw)
    assert message["content"] == [{"type": "tool_use", "id": "t", "name": "Read", "input": {"file_path": "a.txt"}}]
    assert message["usage"] == {"input_tokens": 3, "output_tokens": 2}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'event: error\ndata: {"error": {"code": 500, "message": "boom"}}\n\n', "boom"),
        (encode_event("message_start", {"type": "message_start", "message": {"content": []}}), "before message_stop"),
        (b"data: {not json\n\n", "not JSON"),
    ],
)
def test_broken_streams_are_upstream_errors(raw: bytes, message: str) -> None:
    with pytest.raises(BadUpstreamResponse, match=message):
        run(raw)
