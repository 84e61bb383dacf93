"""Reading a probe's answer, in either dialect, streamed or not, into what doctor judges.

Parsed by hand rather than through the gateway's translators, so that doctor reports what the
backend itself sent (a call's raw argument text, a call written as text), not what ccgate
would have made of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from router.protocol.errors import upstream_error_message
from router.protocol.sse import SSEDecoder


@dataclass(slots=True)
class Answer:
    status: int
    error: str | None = None
    calls: list[tuple[str, str | dict[str, Any]]] = field(default_factory=list)  # (name, arguments)
    text: str = ""
    input_tokens: int | None = None


def error_answer(status: int, body: bytes) -> Answer:
    return Answer(status, upstream_error_message(body) or f"HTTP {status}")


def read_anthropic(body: bytes) -> Answer:
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return Answer(200, f"not JSON: {body[:120]!r}")
    if not isinstance(message, dict) or message.get("type") == "error":
        return Answer(200, upstream_error_message(body) or "not a message")
    answer = Answer(200, input_tokens=_anthropic_input(message.get("usage")))
    for block in message.get("content") or []:
        if block.get("type") == "tool_use":
            answer.calls.append((block.get("name", ""), block.get("input")))
        elif block.get("type") == "text":
            answer.text += block.get("text", "")
    return answer


def read_anthropic_stream(body: bytes) -> Answer:
    answer = Answer(200)
    blocks: dict[int, dict[str, Any]] = {}
    for event in SSEDecoder().feed(body + b"\n\n"):
        try:
            data = msgspec.json.decode(event.data) if event.data else {}
        except msgspec.DecodeError:
            return Answer(200, f"stream event is not JSON: {event.data[:120]!r}")
        kind = data.get("type") if isinstance(data, dict) else None
        if event.event == "error" or kind == "error":
            return Answer(200, upstream_error_message(event.data.encode()) or "error event")
        if kind == "message_start":
            answer.input_tokens = _anthropic_input(data.get("message", {}).get("usage"))
        elif kind == "content_block_start":
            blocks[data.get("index", 0)] = {**data.get("content_block", {}), "json": ""}
        elif kind == "content_block_delta":
            block, delta = blocks.setdefault(data.get("index", 0), {"json": ""}), data.get("delta", {})
            if delta.get("type") == "text_delta":
                answer.text += delta.get("text", "")
            elif delta.get("type") == "input_json_delta":
                block["json"] += delta.get("partial_json", "")
    for index in sorted(blocks):
        block = blocks[index]
        if block.get("type") == "tool_use":
            answer.calls.append((block.get("name", ""), block["json"] or block.get("input") or ""))
    return answer


def read_openai(body: bytes) -> Answer:
    try:
        response = msgspec.json.decode(body)
        message = response["choices"][0]["message"]
    except (msgspec.DecodeError, KeyError, IndexError, TypeError):
        return Answer(200, upstream_error_message(body) or "not a chat completion")
    answer = Answer(200, text=message.get("content") or "", input_tokens=_openai_input(response.get("usage")))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        answer.calls.append((function.get("name", ""), function.get("arguments") or ""))
    return answer


def read_openai_stream(body: bytes) -> Answer:
    answer = Answer(200)
    calls: dict[int, list[str]] = {}
    for event in SSEDecoder().feed(body + b"\n\n"):
        if event.data == "[DONE]":
            break
        try:
            chunk = msgspec.json.decode(event.data)
        except msgspec.DecodeError:
            return Answer(200, f"stream event is not JSON: {event.data[:120]!r}")
        if "error" in chunk:
            return Answer(200, upstream_error_message(event.data.encode()) or "error event")
        if chunk.get("usage"):
            answer.input_tokens = _openai_input(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            answer.text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                entry = calls.setdefault(call.get("index", 0), ["", ""])
                function = call.get("function") or {}
                entry[0] += function.get("name") or ""
                entry[1] += function.get("arguments") or ""
    answer.calls = [(name, arguments) for name, arguments in (calls[i] for i in sorted(calls))]
    return answer


def read_responses(body: bytes) -> Answer:
    try:
        response = msgspec.json.decode(body)
        output = response["output"]
    except (msgspec.DecodeError, KeyError, TypeError):
        return Answer(200, upstream_error_message(body) or "not a response object")
    return _response_answer(response, output)


def read_responses_stream(body: bytes) -> Answer:
    """The stream's last `response.completed` (or `.incomplete`) holds the whole response."""
    for event in reversed(SSEDecoder().feed(body + b"\n\n")):
        try:
            data = msgspec.json.decode(event.data)
        except msgspec.DecodeError:
            return Answer(200, f"stream event is not JSON: {event.data[:120]!r}")
        kind = data.get("type") if isinstance(data, dict) else None
        if (
            kind in ("error", "response.failed")
            or event.event == "error"
            or (isinstance(data, dict) and data.get("error"))
        ):
            return Answer(200, upstream_error_message(event.data.encode()) or str(data)[:200])
        if kind in ("response.completed", "response.incomplete") and isinstance(data.get("response"), dict):
            return _response_answer(data["response"], data["response"].get("output") or [])
    return Answer(200, "the stream has no response.completed event")


def _response_answer(response: dict[str, Any], output: list[Any]) -> Answer:
    usage = response.get("usage") or {}
    answer = Answer(200, input_tokens=usage.get("input_tokens") if isinstance(usage, dict) else None)
    for item in output:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "function_call":
            answer.calls.append((item.get("name", ""), item.get("arguments") or ""))
        elif item.get("type") == "message":
            answer.text += "".join(p.get("text", "") for p in item.get("content") or () if isinstance(p, dict))
    return answer


def _anthropic_input(usage: dict[str, Any] | None) -> int | None:
    if not usage:
        return None
    return sum(usage.get(k) or 0 for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"))


def _openai_input(usage: dict[str, Any] | None) -> int | None:
    return usage.get("prompt_tokens") if usage else None
