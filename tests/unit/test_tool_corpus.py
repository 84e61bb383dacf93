"""The tool-call guard over a corpus of real-world malformed outputs (tool_corpus/, one file per format).

Each case runs twice: as a whole message, and streamed in random pieces through the event-level
guard; both must give the same content, and a rejected call must raise before any byte was let
through when no prose came before it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.protocol.aggregate import MessageAggregator
from router.protocol.sse import SSEDecoder, encode_event
from router.protocol.tool_check import ToolBox, ToolCallError
from router.protocol.tool_guard import ToolCallGuard, guard_message

CORPUS = Path(__file__).parent / "tool_corpus"
FIXTURE = Path(__file__).parents[1] / "fixtures" / "claude-code-request-turn1.json"


def claude_code_tools() -> list[dict[str, Any]]:
    request = json.loads(FIXTURE.read_text())
    return request.get("body", request)["tools"]


MARKUP = (
    "<|channel|>", "<|message|>", "<|call|>", "<|tool_call", "<｜tool", "<invoke", "<arg_key>", "[TOOL_CALLS]",
    "<seed:", "<think>", "<|START_", "<TOOLCALL>", "<|tools_prefix|>", "<tools>", "functools[", "[THINK]",
)  # fmt: skip
CASES = [
    pytest.param(case, id=f"{path.stem}: {case['name']}")
    for path in sorted(CORPUS.glob("*.yaml"))
    for case in yaml.safe_load(path.read_text())
]


def message_of(text: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 7},
    }


def events_of(text: str, rng: random.Random) -> bytes:
    out = [encode_event("message_start", {"type": "message_start", "message": {**message_of(""), "content": []}})]
    out.append(
        encode_event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
    )
    pos = 0
    while pos < len(text):
        size = rng.randint(1, 6)
        piece = {"type": "text_delta", "text": text[pos : pos + size]}
        out.append(encode_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": piece}))
        pos += size
    out.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 7},
    }
    out.append(encode_event("message_delta", delta))
    out.append(encode_event("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def streamed(text: str, seed: int) -> tuple[dict[str, Any], int]:
    """The message the client assembles from the guarded stream, and how many bytes went out
    before the last upstream chunk (0 means a failure could still have been rerouted)."""
    rng = random.Random(seed)
    raw = events_of(text, rng)
    guard = ToolCallGuard(ToolBox(claude_code_tools()))
    out: list[bytes] = []
    pos = 0
    while pos < len(raw):
        size = rng.randint(1, 40)
        out += guard.feed(raw[pos : pos + size])
        pos += size
    early = sum(map(len, out))
    out += guard.finish()
    aggregator = MessageAggregator()
    for event in SSEDecoder().feed(b"".join(out)):
        aggregator.feed(event)
    return aggregator.message(), early


def without_ids(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in block.items() if k != "id"} for block in content]


@pytest.mark.parametrize("case", CASES)
def test_whole_message(case: dict[str, Any]) -> None:
    outcomes: list[str] = []
    tools = ToolBox(claude_code_tools())
    if "error" in case:
        with pytest.raises(ToolCallError) as caught:
            guard_message(message_of(case["text"]), tools, outcomes)
        assert caught.value.kind == case["error"]
        return
    result = guard_message(message_of(case["text"]), tools, outcomes)
    calls = [{"name": b["name"], "input": b["input"]} for b in result["content"] if b["type"] == "tool_use"]
    assert calls == case["calls"]
    texts = [b["text"] for b in result["content"] if b["type"] == "text"]
    thinking = [b["thinking"] for b in result["content"] if b["type"] == "thinking"]
    assert thinking == case.get("thinking", [])  # reasoning written as text becomes thinking, never text
    for text in texts:  # and no markup is ever left in the text
        assert not any(marker in text for marker in MARKUP), text
    if not calls:
        assert texts == case.get("texts", [case["text"]]) and result["stop_reason"] == "end_turn" and outcomes == []
        return
    assert result["stop_reason"] == "tool_use"
    assert all(b["id"].startswith("toolu_") for b in result["content"] if b["type"] == "tool_use")
    assert outcomes == ["converted"] * len(calls)
    expected_text = [t for t in (case.get("prose"), case.get("after")) if t]
    assert texts == expected_text


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("case", CASES)
def test_streamed_equals_whole(case: dict[str, Any], seed: int) -> None:
    if "error" in case:
        with pytest.raises(ToolCallError):
            streamed(case["text"], seed)
        return
    message, _ = streamed(case["text"], seed)
    whole = guard_message(message_of(case["text"]), ToolBox(claude_code_tools()), [])
    assert without_ids(message["content"]) == without_ids(whole["content"])
    assert message["stop_reason"] == whole["stop_reason"]


def test_a_rejected_call_with_nothing_before_it_lets_no_byte_through() -> None:
    guard = ToolCallGuard(ToolBox(claude_code_tools()))
    raw = events_of('<tool_call>\n{"name": "Edit", "arguments": {"file_path": "a"}}\n</tool_call>', random.Random(0))
    released: list[bytes] = []
    with pytest.raises(ToolCallError):
        for i in range(0, len(raw), 16):
            released += guard.feed(raw[i : i + 16])
    assert released == []


def test_prose_streams_before_the_call_is_complete() -> None:
    text = (
        "Reading the file now, then I will explain it.\n<tool_call>\n"
        + '{"name": "Read", "arguments": {"file_path": "a"}}'
    )
    guard = ToolCallGuard(ToolBox(claude_code_tools()))
    raw = events_of(text, random.Random(0))
    cut = raw.index(b"</tool_call>") if b"</tool_call>" in raw else raw.index(b"content_block_stop")
    released = SSEDecoder().feed(b"".join(guard.feed(raw[:cut])))
    texts = [json.loads(e.data)["delta"]["text"] for e in released if e.event == "content_block_delta"]
    assert "".join(texts) == "Reading the file now, then I will explain it.\n"
    assert not any("tool_use" in e.data for e in released)


def tool_use_events(*argument_pieces: str) -> list[bytes]:
    """A structured Read call streamed as llama-server sends one, arguments in these pieces."""
    block = {"type": "tool_use", "id": "toolu_x", "name": "Read", "input": {}}
    events = [encode_event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})]
    for piece in argument_pieces:
        delta = {"type": "input_json_delta", "partial_json": piece}
        events.append(encode_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    return [*events, encode_event("content_block_stop", {"type": "content_block_stop", "index": 0})]


MESSAGE_START = encode_event("message_start", {"type": "message_start", "message": message_of("")})
MESSAGE_STOP = encode_event("message_stop", {"type": "message_stop"})


def test_valid_structured_calls_pass_byte_for_byte() -> None:
    stop = {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}
    raw = b"".join(
        [
            MESSAGE_START,
            *tool_use_events('{"file_path"', ': "a.txt"}'),
            encode_event("message_delta", stop),
            MESSAGE_STOP,
        ]
    )
    guard = ToolCallGuard(ToolBox(claude_code_tools()))
    assert b"".join(guard.feed(raw) + guard.finish()) == raw
    assert guard.outcomes == ["passed"]


def test_a_structured_call_with_bad_arguments_is_repaired() -> None:
    guard = ToolCallGuard(ToolBox(claude_code_tools()))
    out = guard.feed(MESSAGE_START + b"".join(tool_use_events("{'file_path': 'a.txt', 'limit': '3',}")) + MESSAGE_STOP)
    aggregator = MessageAggregator()
    for event in SSEDecoder().feed(b"".join(out + guard.finish())):
        aggregator.feed(event)
    assert aggregator.message()["content"] == [
        {"type": "tool_use", "id": "toolu_x", "name": "Read", "input": {"file_path": "a.txt", "limit": 3}}
    ]
    assert guard.outcomes == ["repaired"]
