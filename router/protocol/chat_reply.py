"""The canonical answer (Anthropic Messages, whole or streamed) → OpenAI Chat Completions (pure).

The opposite direction of from_openai.py. A streamed answer is translated event by event as it
passes: one Anthropic content block becomes one run of `delta.content`, `delta.reasoning_content`
or `delta.tool_calls[i]` chunks.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from router.protocol.answer_events import AnswerEvents
from router.protocol.errors import openai_error_body
from router.protocol.sse import Event, encode_data

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
DONE = b"data: [DONE]\n\n"


def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "end_turn", "stop")


def token_counts(usage: dict[str, Any] | None) -> tuple[int, int, int]:
    """(prompt, cached, output) the OpenAI way, which counts cached prompt tokens inside the
    prompt; Anthropic counts them apart from input_tokens."""
    u = usage or {}
    cached = _int(u.get("cache_read_input_tokens"))
    prompt = _int(u.get("input_tokens")) + cached + _int(u.get("cache_creation_input_tokens"))
    return prompt, cached, _int(u.get("output_tokens"))


def openai_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    prompt, cached, completion = token_counts(usage)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def arguments_of(tool_input: Any) -> str:
    return msgspec.json.encode(tool_input if tool_input is not None else {}).decode()


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def chat_completion(message: dict[str, Any], model: str) -> dict[str, Any]:
    """A whole `chat.completion` for a whole Anthropic message."""
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use":
            function = {"name": block.get("name", ""), "arguments": arguments_of(block.get("input"))}
            calls.append({"id": block.get("id", ""), "type": "function", "function": function})
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model") or model,
        "choices": [{"index": 0, "message": reply, "finish_reason": finish_reason(message.get("stop_reason"))}],
        "usage": openai_usage(message.get("usage")),
    }


class ChatStream(AnswerEvents):
    """Anthropic stream events in, `chat.completion.chunk` lines out (ending in `data: [DONE]`).

    `include_usage`: the client asked (stream_options) for a last chunk with the usage and no
    choices, as OpenAI sends it."""

    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model)
        self.id = completion_id()
        self.created = int(time.time())
        self.include_usage = include_usage
        self._calls: dict[int, int] = {}  # Anthropic block index → OpenAI tool_calls index

    def feed(self, event: Event) -> list[bytes]:
        read = self.read(event)
        if read is None:
            return []
        kind, data = read
        if kind == "message_start":
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") != "tool_use":
                return []
            index = self._calls.setdefault(data.get("index", 0), len(self._calls))
            call = {
                "index": index,
                "id": block.get("id", ""),
                "type": "function",
                "function": {"name": block.get("name", ""), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "message_stop":
            return self.finish()
        if kind == "error":
            self.done = True
            error = data.get("error") or {}
            body = openai_error_body(502, str(error.get("message") or "the backend's stream failed"))
            if isinstance(error.get("type"), str):
                body["error"]["code"] = error["type"]
            return [encode_data(body), DONE]
        return []

    def finish(self) -> list[bytes]:
        """The closing chunks; also what an upstream that just stopped gets."""
        if self.done:
            return []
        self.done = True
        out = [self._chunk({}, finish_reason(self.stop))]
        if self.include_usage:
            usage = {**self._frame(), "choices": [], "usage": openai_usage(self.usage)}
            out.append(encode_data(usage))
        out.append(DONE)
        return out

    def _delta(self, data: dict[str, Any]) -> list[bytes]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = self._calls.get(data.get("index", 0))
            if index is not None:
                call = {"index": index, "function": {"arguments": delta["partial_json"]}}
                return [self._chunk({"tool_calls": [call]})]
        return []

    def _frame(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return encode_data({**self._frame(), "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
