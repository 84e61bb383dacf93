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


def test_cache_writes_five_minute_and_one_hour_are_apart() -> None:
    usage = usage_of_message(
        b'{"usage": {"input_tokens": 4, "cache_creation_input_tokens": 30500, "cache_read_input_tokens": 2000,'
        b' "cache_creation": {"ephemeral_5m_input_tokens": 30000, "ephemeral_1h_input_tokens": 500},'
        b' "output_tokens": 50}}'
    )
    assert dict(usage.counts()) == {
        "input": 4,
        "cached": 2000,
        "cache_write": 30000,
        "cache_write_1h": 500,
        "output": 50,
    }
    assert usage.total == 32554
    plain = usage_of_message(b'{"usage": {"input_tokens": 1, "cache_creation_input_tokens": 700, "output_tokens": 2}}')
    assert (plain.cache_write, plain.cache_write_1h) == (700, 0)  # no split said: the 5-minute cache


def test_a_stream_cut_short_counts_what_was_relayed_and_says_so() -> None:
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}}
    raw = encode_event("message_start", start) + b"".join(
        encode_event(
            "content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x" * 38}}
        )
        for _ in range(10)
    )
    tap = UsageTap()
    tap.feed(raw)  # ... and the client left: no message_delta
    tap.usage.settle()
    assert (tap.usage.output, tap.usage.estimated) == (100, 99)  # 380 characters, not the start's 1
    whole = UsageTap()
    whole.feed(raw + encode_event("message_delta", {"type": "message_delta", "usage": {"output_tokens": 120}}))
    whole.usage.settle()
    assert (whole.usage.output, whole.usage.estimated) == (120, 0)  # the upstream's own count wins
