"""OpenAI Chat Completions and Responses requests into the canonical shape, and the canonical
answer back out (protocol/chat_*, protocol/responses_*), with plain data."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from router.protocol.anthropic import InvalidRequest, MessagesRequest, validate
from router.protocol.chat_reply import ChatStream, chat_completion
from router.protocol.chat_request import chat_to_canonical
from router.protocol.from_openai import StreamTranslator
from router.protocol.responses_reply import ResponsesStream, response_object
from router.protocol.responses_request import responses_to_canonical
from router.protocol.sse import SSEDecoder, encode_event
from router.protocol.to_openai import to_openai_request

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _tools(request: dict) -> list[str]:
    return [t["name"] for t in request.get("tools", [])]


@pytest.mark.parametrize("name", ["claude-code-request-turn1.json", "claude-code-request-turn2-tool-result.json"])
def test_a_captured_conversation_survives_the_trip_through_chat_completions(name: str) -> None:
    original = json.loads((FIXTURES / name).read_text())["body"]
    request = validate(original, MessagesRequest)
    back = chat_to_canonical(to_openai_request(request, original["model"]))
    validate(back, MessagesRequest)
    assert _tools(back) == [t["name"] for t in original["tools"] if t.get("type") in (None, "custom")]
    assert back["max_tokens"] == original["max_tokens"]

    def kinds(messages: list[dict]) -> list[tuple[str, list[str]]]:
        out = []
        for m in messages:
            blocks = [{"type": "text"}] if isinstance(m["content"], str) else m["content"]
            wanted = [b["type"] for b in blocks if b["type"] in ("tool_use", "tool_result")]
            out.append((m["role"], wanted))
        return out

    assert kinds(back["messages"]) == kinds(original["messages"])  # a system turn stays where it was
    uses = [b for m in back["messages"] if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"]
    originals = [
        b
        for m in original["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_use"
    ]
    assert [(u["id"], u["input"]) for u in uses] == [(o["id"], o["input"]) for o in originals]


def test_chat_messages_become_blocks_tool_results_and_one_system() -> None:
    body = {
        "model": "qwen",
        "max_completion_tokens": 300,
        "max_tokens": 5,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "I should read it.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "read", "arguments": '{"filePath": "a.txt"}'},
                    },
                    {"id": "c2", "type": "function", "function": {"name": "read", "arguments": "{broken"}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "hello"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "world"}]},
            {"role": "user", "content": "now answer"},
        ],
        "tools": [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "stop": "END",
        "stream": True,
    }
    out = chat_to_canonical(body)
    assert out["system"] == [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Use tools."}]
    assert out["max_tokens"] == 300 and out["stream"] is True and out["stop_sequences"] == ["END"]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["tools"] == [{"name": "read", "input_schema": {"type": "object"}}]
    user, assistant, results = out["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"},
    }
    assert [b["type"] for b in assistant["content"]] == ["thinking", "tool_use", "tool_use"]
    assert assistant["content"][1]["input"] == {"filePath": "a.txt"} and assistant["content"][2]["input"] == {}
    assert results["role"] == "user"
    assert [b.get("tool_use_id") or b["text"] for b in results["content"]] == ["c1", "c2", "now answer"]
    validate(out, MessagesRequest)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"messages": []}, "messages"),
        ({"model": 3}, "model"),
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0].type"),
    ],
)
def test_a_bad_chat_request_names_its_field(change: dict, field: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(InvalidRequest) as caught:
        chat_to_canonical(body)
    assert str(caught.value).startswith(field)


MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "local-model",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": ""},
        {"type": "text", "text": "Reading."},
        {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"filePath": "a.txt"}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 7},
}


def _events(message: dict) -> list[bytes]:
    """An Anthropic stream for `message`, as a backend sends it."""
    start = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": 10, "output_tokens": 0}}
    out = [encode_event("message_start", {"type": "message_start", "message": start})]
    for i, block in enumerate(message["content"]):
        kind = block["type"]
        empty = {
            "thinking": {**block, "thinking": ""},
            "text": {**block, "text": ""},
            "tool_use": {**block, "input": {}},
        }
        out.append(
            encode_event(
                "content_block_start", {"type": "content_block_start", "index": i, "content_block": empty[kind]}
            )
        )
        if kind == "thinking":
            delta = {"type": "thinking_delta", "thinking": block["thinking"]}
        elif kind == "text":
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        out.append(encode_event("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta}))
        out.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": i}))
    final = {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"]}, "usage": message["usage"]}
    out += [encode_event("message_delta", final), encode_event("message_stop", {"type": "message_stop"})]
    return out


def _run(translator: ChatStream | ResponsesStream, chunks: list[bytes]) -> bytes:
    decoder = SSEDecoder()
    return b"".join(b for chunk in chunks for event in decoder.feed(chunk) for b in translator.feed(event))


def test_a_whole_answer_as_a_chat_completion() -> None:
    done = chat_completion(MESSAGE, "asked")
    choice = done["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Reading." and choice["message"]["reasoning_content"] == "hmm"
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_1" and json.loads(call["function"]["arguments"]) == {"filePath": "a.txt"}
    assert done["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 7,
        "total_tokens": 107,
        "prompt_tokens_details": {"cached_tokens": 90},
    }


def test_a_streamed_answer_as_chat_chunks_reads_back_as_the_same_answer() -> None:
    """Through ChatStream and back through the OpenAI-backend translator: the same blocks."""
    out = _run(ChatStream("asked", include_usage=True), _events(MESSAGE))
    payloads = [line[6:] for line in out.decode().split("\n\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 100
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    back = StreamTranslator("x")
    events = [e for c in chunks for e in back.feed(c)] + back.finish()
    decoder = SSEDecoder()
    blocks = [
        json.loads(e.data)["content_block"]["type"]
        for raw in events
        for e in decoder.feed(raw)
        if e.event == "content_block_start"
    ]
    assert blocks == ["thinking", "text", "tool_use"]


def test_a_stream_error_ends_the_chat_stream_in_openai_shape() -> None:
    error = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"gone"}}\n\n'
    chunks = [*_events(MESSAGE)[:3], error]
    out = _run(ChatStream("m", include_usage=False), chunks).decode()
    last = json.loads(out.split("\n\n")[-3].removeprefix("data: "))
    assert last == {"error": {"message": "gone", "type": "server_error", "param": None, "code": "overloaded_error"}}
    assert out.endswith("data: [DONE]\n\n")


CODEX_INPUT = [
    {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be careful"}]},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list files"}]},
    {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "run ls"}],
        "encrypted_content": None,
    },
    {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": '{"cmd": "ls"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "a.txt\n"},
]


def test_codex_shaped_input_items_become_the_canonical_conversation() -> None:
    body = {
        "model": "gpt-oss",
        "instructions": "You are Codex.",
        "input": CODEX_INPUT,
        "tools": [
            {
                "type": "function",
                "name": "exec_command",
                "description": "run",
                "strict": False,
                "parameters": {"type": "object"},
            },
            {"type": "web_search"},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "store": False,
        "stream": True,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
    }
    out, dropped = responses_to_canonical(body)
    assert dropped == ["web_search"]
    assert out["system"] == [{"type": "text", "text": "You are Codex."}, {"type": "text", "text": "be careful"}]
    user, assistant, result = out["messages"]
    assert user == {"role": "user", "content": [{"type": "text", "text": "list files"}]}
    assert [b["type"] for b in assistant["content"]] == ["thinking", "tool_use"]
    assert assistant["content"][1] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "exec_command",
        "input": {"cmd": "ls"},
    }
    assert result["content"] == [{"type": "tool_result", "tool_use_id": "call_1", "content": "a.txt\n"}]
    assert out["tools"] == [{"name": "exec_command", "input_schema": {"type": "object"}, "description": "run"}]
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    validate(out, MessagesRequest)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"tools": [{"type": []}]}, "tools[0].type"),  # found by the property test over HTTP
        ({"input": [{"type": "reasoning", "summary": [{"text": {}}]}]}, "input"),  # ditto: was a 500
        ({"input": []}, "input"),
        ({"input": [{"type": "mystery"}]}, "input[0].type"),
        ({"input": [{"type": "function_call", "name": "x"}]}, "input[0]"),
        ({"max_output_tokens": -1}, "max_output_tokens"),
    ],
)
def test_a_bad_responses_request_names_its_field(change: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        responses_to_canonical({"model": "m", "input": "hi", **change})
    assert str(caught.value).startswith(field)


def test_a_whole_answer_as_a_response_object() -> None:
    request = {"model": "m", "input": "x", "tools": [], "parallel_tool_calls": True}
    out = response_object(MESSAGE, request, "m")
    assert out["object"] == "response" and out["status"] == "completed"
    assert [i["type"] for i in out["output"]] == ["reasoning", "message", "function_call"]
    assert out["output"][1]["content"][0] == {"type": "output_text", "text": "Reading.", "annotations": []}
    assert out["output"][2]["call_id"] == "toolu_1" and json.loads(out["output"][2]["arguments"]) == {
        "filePath": "a.txt"
    }
    assert out["usage"]["input_tokens"] == 100 and out["usage"]["input_tokens_details"]["cached_tokens"] == 90
    cut = response_object({**MESSAGE, "stop_reason": "max_tokens"}, request, "m")
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}


def test_a_streamed_answer_as_typed_response_events() -> None:
    out = _run(ResponsesStream({"model": "m", "input": "x"}, "m"), _events(MESSAGE))
    decoder = SSEDecoder()
    events = [(e.event, msgspec.json.decode(e.data)) for e in decoder.feed(out)]
    names = [name for name, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert all(data["type"] == name for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert names.count("response.output_item.added") == names.count("response.output_item.done") == 3
    assert "response.output_text.delta" in names and "response.function_call_arguments.delta" in names
    done_items = [data["item"] for name, data in events if name == "response.output_item.done"]
    completed = events[-1][1]["response"]
    assert completed["output"] == done_items
    assert [i["type"] for i in done_items] == ["reasoning", "message", "function_call"]
    assert json.loads(done_items[2]["arguments"]) == {"filePath": "a.txt"}
    assert completed["usage"]["output_tokens"] == 7 and completed["status"] == "completed"
