"""Anthropic Messages request → OpenAI Chat Completions request."""

from __future__ import annotations

import json

import pytest

from router.protocol.anthropic import InvalidRequest, MessagesRequest, validate
from router.protocol.to_openai import to_openai_request

PNG = "iVBORw0KGgo="


def convert(**body: object) -> dict:
    base = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    return to_openai_request(validate({**base, **body}, MessagesRequest), "local-model")


def test_minimal() -> None:
    out = convert()
    assert out == {"model": "local-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}


def test_system_blocks_joined_and_first() -> None:
    out = convert(
        system=[{"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}]
    )
    assert out["messages"][0] == {"role": "system", "content": "ab"}


def test_mid_conversation_system_message_kept_in_place() -> None:
    messages = [
        {"role": "user", "content": "one"},
        {"role": "system", "content": "reminder"},
        {"role": "assistant", "content": "two"},
    ]
    out = convert(messages=messages)
    assert [m["role"] for m in out["messages"]] == ["user", "system", "assistant"]


def test_sampling_and_streaming_options() -> None:
    out = convert(stream=True, temperature=0.2, top_p=0.9, top_k=5, stop_sequences=["END"])
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert (out["temperature"], out["top_p"], out["top_k"], out["stop"]) == (0.2, 0.9, 5, ["END"])


def test_tools_and_choice() -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": {}}
    tools = [
        {"name": "Read", "description": "read", "input_schema": schema},
        {"type": "web_search_20250305", "name": "web_search"},  # server tool: Anthropic only
    ]
    out = convert(tools=tools, tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert out["tools"] == [
        {"type": "function", "function": {"name": "Read", "parameters": schema, "description": "read"}}
    ]
    assert out["tool_choice"] == "required"
    assert out["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "Read"}, {"type": "function", "function": {"name": "Read"}}),
    ],
)
def test_tool_choice_kinds(choice: dict, expected: object) -> None:
    out = convert(tools=[{"name": "Read", "input_schema": {"type": "object"}}], tool_choice=choice)
    assert out["tool_choice"] == expected


def test_tool_use_and_result_round() -> None:
    messages = [
        {"role": "user", "content": "read it"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should read", "signature": "sig"},
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "a"}},
                {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"file_path": "b"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "A"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "B"}],
                    "is_error": True,
                },
                {"type": "text", "text": "now summarise"},
            ],
        },
    ]
    out = convert(messages=messages)["messages"]
    assistant = out[1]
    assert assistant["content"] == "Reading."
    assert assistant["reasoning_content"] == "I should read"
    assert [c["id"] for c in assistant["tool_calls"]] == ["toolu_1", "toolu_2"]
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"file_path": "a"}
    assert out[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "A"}
    assert out[3] == {"role": "tool", "tool_call_id": "toolu_2", "content": "B"}
    assert out[4] == {"role": "user", "content": "now summarise"}


def test_images_in_user_and_tool_results() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    url_image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look"}, image, url_image]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [image]}]},
    ]
    out = convert(messages=messages)["messages"]
    parts = out[0]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert parts[2]["image_url"]["url"] == "https://example.com/a.png"
    assert out[2] == {"role": "tool", "tool_call_id": "t", "content": ""}
    assert out[3]["role"] == "user" and out[3]["content"][0]["type"] == "image_url"


def test_assistant_with_only_tool_use_has_null_content() -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "A", "input": {}}]},
    ]
    assistant = convert(messages=messages)["messages"][1]
    assert assistant["content"] is None
    assert assistant["tool_calls"][0]["function"]["arguments"] == "{}"


def test_cache_control_and_metadata_do_not_leak() -> None:
    out = convert(
        metadata={"user_id": "u"},
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}
        ],
    )
    assert "metadata" not in out and "cache_control" not in json.dumps(out)
    assert out["messages"] == [{"role": "user", "content": "hi"}]


def test_unsupported_block_names_its_place() -> None:
    messages = [{"role": "user", "content": [{"type": "container_upload", "file_id": "f"}]}]
    with pytest.raises(InvalidRequest, match=r"messages\[0\]\.content\[0\]\.type"):
        convert(messages=messages)


def test_text_document_becomes_text() -> None:
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "DOC"}}
    out = convert(messages=[{"role": "user", "content": [doc]}])
    assert out["messages"] == [{"role": "user", "content": "DOC"}]
