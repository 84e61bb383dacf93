"""OpenAI Chat Completions responses (whole and streamed) → Anthropic Messages."""

from __future__ import annotations

import json

import pytest

from router.protocol.from_openai import BadUpstreamResponse, StreamTranslator, to_anthropic_message
from router.protocol.sse import SSEDecoder


def completion(message: dict, finish: str = "stop", usage: dict | None = None) -> dict:
    return {
        "id": "c1",
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def test_text_with_cached_usage() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 60}}
    out = to_anthropic_message(completion({"role": "assistant", "content": "hello"}, usage=usage), "req-model")
    assert out["type"] == "message" and out["role"] == "assistant" and out["id"].startswith("msg_")
    assert out["content"] == [{"type": "text", "text": "hello"}]
    assert out["stop_reason"] == "end_turn"
    assert out["usage"] == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 0,
    }
    assert out["model"] == "m"


def test_tool_calls_keep_ids_and_parse_arguments() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "reasoning_content": "think",
        "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "Read", "arguments": '{"a": 1}'}}],
    }
    out = to_anthropic_message(completion(message, "tool_calls"), "m")
    assert out["content"][0] == {"type": "thinking", "thinking": "think", "signature": ""}
    assert out["content"][1] == {"type": "tool_use", "id": "call_9", "name": "Read", "input": {"a": 1}}
    assert out["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("finish", "reason"), [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")]
)
def test_stop_reasons(finish: str, reason: str) -> None:
    assert to_anthropic_message(completion({"content": "x"}, finish), "m")["stop_reason"] == reason


def test_calls_with_finish_stop_are_still_tool_use() -> None:
    message = {"tool_calls": [{"id": "c", "function": {"name": "A", "arguments": "{}"}}]}
    assert to_anthropic_message(completion(message, "stop"), "m")["stop_reason"] == "tool_use"


def test_broken_arguments_are_an_upstream_error() -> None:
    message = {"tool_calls": [{"id": "c", "function": {"name": "A", "arguments": '{"a": '}}]}
    with pytest.raises(BadUpstreamResponse, match="invalid JSON arguments for tool 'A'"):
        to_anthropic_message(completion(message), "m")


def test_no_choices_is_an_upstream_error() -> None:
    with pytest.raises(BadUpstreamResponse):
        to_anthropic_message({"choices": []}, "m")


def events(chunks: list[dict]) -> list[tuple[str, dict]]:
    translator = StreamTranslator("req-model")
    raw = b"".join(b"".join(translator.feed(c)) for c in chunks) + b"".join(translator.finish())
    return [(e.event or "", json.loads(e.data)) for e in SSEDecoder().feed(raw)]


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return {"id": "c", "model": "m", "choices": choices, **({"usage": usage} if usage else {})}


def test_stream_text_only() -> None:
    out = events(
        [
            chunk({"role": "assistant", "content": None}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk(finish="stop"),
            chunk(usage={"prompt_tokens": 10, "completion_tokens": 2}),
        ]
    )
    names = [n for n, _ in out]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert out[0][1]["message"]["model"] == "m"
    assert out[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert out[3][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert out[6][1]["delta"]["stop_reason"] == "end_turn"
    assert out[6][1]["usage"]["output_tokens"] == 2 and out[6][1]["usage"]["input_tokens"] == 10


def test_stream_thinking_then_text_then_two_tool_calls() -> None:
    out = events(
        [
            chunk({"reasoning_content": "hmm"}),
            chunk({"content": "ok"}),
            chunk({"tool_calls": [{"index": 0, "id": "call_a", "function": {"name": "Read", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"file'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '_path": "a"}'}}]}),
            chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "Bash", "arguments": "{}"}}]}),
            chunk(finish="tool_calls"),
        ]
    )
    starts = [(d["index"], d["content_block"]["type"]) for n, d in out if n == "content_block_start"]
    stops = [d["index"] for n, d in out if n == "content_block_stop"]
    assert starts == [(0, "thinking"), (1, "text"), (2, "tool_use"), (3, "tool_use")]
    assert stops == [0, 1, 2, 3]
    tool_starts = [d["content_block"] for n, d in out if n == "content_block_start" and d["index"] >= 2]
    assert [(b["id"], b["name"]) for b in tool_starts] == [("call_a", "Read"), ("call_b", "Bash")]
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in out
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta" and d["index"] == 2
    )
    assert json.loads(partial) == {"file_path": "a"}
    signature = [d for n, d in out if n == "content_block_delta" and d["delta"]["type"] == "signature_delta"]
    assert signature and signature[0]["index"] == 0
    [delta] = [d for n, d in out if n == "message_delta"]
    assert delta["delta"]["stop_reason"] == "tool_use"


def test_stream_finish_is_idempotent_and_an_empty_stream_is_a_bad_answer() -> None:
    """A stream that ended before a single chunk (an HTML page, only `[DONE]`) is not an empty
    answer: it is an upstream gone wrong, and the next backend may answer instead."""
    with pytest.raises(BadUpstreamResponse, match="without a single"):
        StreamTranslator("m").finish()
    translator = StreamTranslator("m")
    first = b"".join(translator.feed({"id": "c", "choices": []}) + translator.finish())
    assert b"message_start" in first and b"message_stop" in first
    assert translator.finish() == []


def test_stream_error_chunk_raises() -> None:
    with pytest.raises(BadUpstreamResponse, match="boom"):
        StreamTranslator("m").feed({"error": {"message": "boom", "code": 500}})


def test_invalid_arguments_are_kept_for_the_guard_to_repair() -> None:
    from router.protocol.tool_check import ToolBox
    from router.protocol.tool_guard import guard_message

    call = {"id": "c1", "type": "function", "function": {"name": "Read", "arguments": "{'file_path': 'a.txt',}"}}
    response = {"choices": [{"message": {"role": "assistant", "tool_calls": [call]}, "finish_reason": "tool_calls"}]}
    with pytest.raises(BadUpstreamResponse):
        to_anthropic_message(response, "m")
    message = to_anthropic_message(response, "m", keep_invalid=True)
    tools = ToolBox([{"name": "Read", "input_schema": {"type": "object", "required": ["file_path"]}}])
    outcomes: list[str] = []
    guarded = guard_message(message, tools, outcomes)
    assert guarded["content"][0]["input"] == {"file_path": "a.txt"} and outcomes == ["repaired"]


def test_llama_server_timings_count_the_prompt_in_message_start_and_stand_if_no_usage_follows() -> None:
    """llama-server (timings_per_token) opens with a role-only chunk, then says the prompt's
    tokens in the first content chunk's timings: message_start waits for them."""
    role = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}
    first = {
        "choices": [{"index": 0, "delta": {"content": "Hi"}}],
        "timings": {"prompt_n": 120, "cache_n": 900, "predicted_n": 1},
    }
    out = events([role, first])  # the stream ends without its usage chunk
    start = next(data for kind, data in out if kind == "message_start")
    assert start["message"]["usage"] == {"input_tokens": 120, "cache_read_input_tokens": 900, "output_tokens": 0}
    end = next(data for kind, data in out if kind == "message_delta")
    assert end["usage"]["input_tokens"] == 120 and end["usage"]["cache_read_input_tokens"] == 900


@pytest.mark.parametrize(
    "timings", [{"prompt_n": True, "cache_n": 0}, {"prompt_n": -1, "cache_n": 0}, {"prompt_n": 2**62, "cache_n": 0}]
)
def test_timings_that_are_not_counts_say_nothing(timings: dict) -> None:
    out = events([{"choices": [{"index": 0, "delta": {"content": "Hi"}}], "timings": timings}])
    start = next(data for kind, data in out if kind == "message_start")
    assert start["message"]["usage"]["input_tokens"] == 0
