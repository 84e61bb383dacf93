from __future__ import annotations

from router.protocol.sse import encode_event
from router.protocol.usage import UsageTap, usage_of_message


def test_tap_reads_usage_across_split_chunks() -> None:
    raw = (
        encode_event(
            "message_start",
            {"type": "message_start", "message": {"usage": {"input_tokens": 5, "cache_read_input_tokens": 100}}},
        )
        + encode_event("content_block_delta", {"type": "content_block_delta", "delta": {"text": "usage"}})
        + encode_event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 7}})
    )
    tap = UsageTap()
    for i in range(0, len(raw), 9):
        tap.feed(raw[i : i + 9])
    assert (tap.usage.input, tap.usage.cached, tap.usage.output) == (5, 100, 7)


def test_message_usage_and_garbage() -> None:
    usage = usage_of_message(b'{"usage": {"input_tokens": 3, "output_tokens": 2}}')
    assert (usage.input, usage.output, usage.cached) == (3, 2, 0)
    assert usage_of_message(b"not json").output == 0
