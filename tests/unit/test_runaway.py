"""The runaway guard: an answer that repeats itself, or writes another family's end-of-turn
markup, ends cleanly right there; prose and code that merely look alike go through."""

from __future__ import annotations

import json

import pytest

from router.protocol.runaway import RepetitionWatch, leaked_end, partial_end, repeated_tail
from router.protocol.runaway_stream import MARKUP, REPETITION, RunawayGuard, StopAnswer
from router.protocol.sse import SSEDecoder, encode_event

LOOP_LINE = "- security-review: Complete a security review of the pending changes on the current branch\n"


def stream(text: str, piece: int = 4, kind: str = "text") -> list[bytes]:
    start = {"type": "message_start", "message": {"id": "m", "content": [], "usage": {"input_tokens": 3}}}
    block = {"type": kind, kind: ""}
    events = [
        encode_event("message_start", start),
        encode_event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
    ]
    for i in range(0, len(text), piece):
        delta = {"type": f"{kind}_delta", kind: text[i : i + piece]}
        events.append(encode_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    events += [
        encode_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        encode_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}}),
        encode_event("message_stop", {"type": "message_stop"}),
    ]
    return events


def run(events: list[bytes]) -> tuple[list[dict], StopAnswer | None]:
    guard = RunawayGuard()
    out: list[bytes] = []
    try:
        for chunk in events:
            out += guard.feed(chunk)
        out += guard.finish()
    except StopAnswer as stop:
        return [json.loads(e.data) for e in SSEDecoder().feed(b"".join(out + stop.events))], stop
    return [json.loads(e.data) for e in SSEDecoder().feed(b"".join(out))], None


def text_of(events: list[dict], kind: str = "text") -> str:
    return "".join(e["delta"].get(kind, "") for e in events if e["type"] == "content_block_delta")


def test_a_line_repeated_to_the_end_is_stopped_after_a_few_times() -> None:
    events, stop = run(stream("Here is the list:\n" + LOOP_LINE * 200))
    assert stop is not None and stop.kind == REPETITION
    said = text_of(events)
    assert said.count(LOOP_LINE) <= 12  # stopped early, not at max_tokens
    assert "[ccgate stopped this answer: the model repeated itself" in said
    assert [e["type"] for e in events[-3:]] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2]["delta"]["stop_reason"] == "end_turn"


def test_a_thinking_loop_is_stopped_and_said_in_a_text_block() -> None:
    events, stop = run(stream("I wonder. " * 300, kind="thinking"))
    assert stop is not None and stop.kind == REPETITION
    text_blocks = [e for e in events if e["type"] == "content_block_start" and e["content_block"]["type"] == "text"]
    assert len(text_blocks) == 1 and "model repeated itself" in text_of(events)


@pytest.mark.parametrize("marker", ["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<｜end▁of▁sentence｜>"])
def test_another_familys_end_of_turn_markup_ends_the_turn_there(marker: str) -> None:
    for piece in (1, 3, 7):
        events, stop = run(stream(f"The answer is 42.{marker}\n<|im_start|>user\nmore", piece=piece))
        assert stop is not None and stop.kind == MARKUP
        assert text_of(events) == "The answer is 42."  # nothing of the markup, nothing after it


def test_text_that_only_starts_like_markup_goes_through_whole() -> None:
    events, stop = run(stream("compare a <| b and x <|im_start or y < z", piece=2))
    assert stop is None and text_of(events) == "compare a <| b and x <|im_start or y < z"


def test_prose_and_code_that_look_alike_go_through() -> None:
    table = "".join(f"| {i:4d} | {i * i:8d} | {'x' * (i % 7)} |\n" for i in range(200))
    tests = "".join(f"def test_case_{i}():\n    assert add({i}, {i}) == {2 * i}\n\n" for i in range(100))
    short = "}\n" * 30 + "\n" * 40 + "=" * 120
    for text in (table, tests, short):
        events, stop = run(stream(text))
        assert stop is None and text_of(events) == text


def test_the_rule() -> None:
    assert repeated_tail("x" * 599) is None and repeated_tail("x" * 600) is not None
    found = repeated_tail("intro " + "abcdefghij" * 60)
    assert found is not None and found.period == 10 and found.repeats == 60
    assert repeated_tail("abcdefghij" * 3 + "z" * 20) is None
    watch = RepetitionWatch(every=1)
    assert all(watch.add(c) is None for c in "no repetition here at all, just words " * 2)
    assert leaked_end("a<|im_end|>b") == 1 and leaked_end("a < b") is None
    assert partial_end("text <|im_") == 5 and partial_end("plain") == 0
