"""OpenAI Chat Completions response (whole or streamed) → Anthropic Messages response (pure)."""

from __future__ import annotations

import math
import uuid
from typing import Any

import msgspec

from router.protocol.errors import BadUpstreamResponse
from router.protocol.estimate import BYTES_PER_TOKEN
from router.protocol.sse import encode_event
from router.protocol.usage import relayed_in

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def usage(openai_usage: dict[str, Any] | None) -> dict[str, int]:
    """Anthropic counts cache reads apart from input_tokens; OpenAI includes them in prompt_tokens."""
    u = openai_usage or {}
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": max(0, (u.get("prompt_tokens") or 0) - cached),
        "output_tokens": u.get("completion_tokens") or 0,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def stop_reason(finish_reason: str | None) -> str | None:
    if finish_reason is None:
        return None
    return STOP_REASONS.get(finish_reason, "end_turn")


def tool_input(arguments: str | dict[str, Any] | None, name: str, keep_invalid: bool = False) -> Any:
    """A call's arguments as an object. `keep_invalid`: hand back text that is not a JSON object
    as it is, for the tool-call guard to repair or reject."""
    if isinstance(arguments, dict):
        return arguments
    if not arguments:
        return {}
    try:
        parsed = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        if keep_invalid:
            return arguments
        raise BadUpstreamResponse(f"backend returned invalid JSON arguments for tool {name!r}") from None
    if not isinstance(parsed, dict):
        raise BadUpstreamResponse(f"backend returned non-object arguments for tool {name!r}")
    return parsed


def to_anthropic_message(response: dict[str, Any], model: str, keep_invalid: bool = False) -> dict[str, Any]:
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        raise BadUpstreamResponse("backend response has no choices")
    choice = choices[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        name = function.get("name", "")
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                "name": name,
                "input": tool_input(function.get("arguments"), name, keep_invalid),
            }
        )
    finish = choice.get("finish_reason")
    if message.get("tool_calls") and finish == "stop":
        finish = "tool_calls"  # some servers say stop even when they return calls
    return {
        "id": new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": response.get("model") or model,
        "content": content,
        "stop_reason": stop_reason(finish) or "end_turn",
        "stop_sequence": None,
        "usage": usage(response.get("usage")),
    }


class StreamTranslator:
    """OpenAI `chat.completion.chunk` objects in, Anthropic SSE event bytes out.

    Keeps the one open content block (thinking, text or tool_use) and its index; a change of
    kind, or a new tool call, closes the open block and starts the next.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.finished = False
        self._index = -1
        self._open: str | None = None  # "thinking" | "text" | "tool:<openai index>"
        self._stop: str | None = None
        self._usage: dict[str, int] = usage(None)
        self._counted = False  # the upstream said its usage (stream_options.include_usage)
        self._written = 0  # characters of content relayed: the output count, estimated, if it did not
        self._saw_tool_call = False
        self._seen = False  # any chunk at all

    def feed(self, chunk: object) -> list[bytes]:
        if not isinstance(chunk, dict):
            raise BadUpstreamResponse(f"stream event is {type(chunk).__name__}, not a chat.completion.chunk object")
        if isinstance(chunk.get("error"), dict | str):
            raise BadUpstreamResponse(_error_text(chunk["error"]))
        self._seen = True
        if not self.started and _says_nothing(chunk):
            return []  # llama-server's first chunk (role only): message_start waits for its timings
        out = self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self._usage = usage(chunk["usage"])
            self._counted = True
        choices = chunk.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise BadUpstreamResponse("stream event with `choices` that are not a list of objects")
        for choice in choices:
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise BadUpstreamResponse("stream event with a `delta` that is not an object")
            if delta.get("reasoning_content"):
                out += self._switch("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._delta({"type": "thinking_delta", "thinking": delta["reasoning_content"]}))
            if delta.get("content"):
                out += self._switch("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or ():
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self._stop = choice["finish_reason"]
        return out

    def finish(self) -> list[bytes]:
        """Close the message; call once the upstream stream ended (`[DONE]` or EOF)."""
        if self.finished:
            return []
        if not self._seen:
            raise BadUpstreamResponse("the stream ended without a single chat.completion.chunk")
        out = self._start({})
        out += self._close()
        finish = "tool_calls" if self._saw_tool_call and self._stop in (None, "stop") else self._stop
        self.finished = True
        if not self._counted:  # a server that does not say: what went out, at ~3.8 bytes a token
            self._usage = {**self._usage, "output_tokens": math.ceil(self._written / BYTES_PER_TOKEN)}
        out.append(
            encode_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason(finish) or "end_turn", "stop_sequence": None},
                    "usage": self._usage,
                },
            )
        )
        out.append(encode_event("message_stop", {"type": "message_stop"}))
        return out

    def _start(self, chunk: dict[str, Any]) -> list[bytes]:
        if self.started:
            return []
        self.started = True
        message = {
            "id": new_message_id(),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _prompt_usage(chunk.get("timings")),
        }
        if message["usage"]["input_tokens"] or message["usage"].get("cache_read_input_tokens"):
            # what the prompt was, should the stream end before its usage chunk
            self._usage = {**self._usage, **message["usage"]}
        return [
            encode_event("message_start", {"type": "message_start", "message": message}),
            encode_event("ping", {"type": "ping"}),
        ]

    def _tool_call(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        function = call.get("function") or {}
        key = f"tool:{call.get('index', 0)}"
        if self._open != key:
            self._saw_tool_call = True
            block = {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                "name": function.get("name", ""),
                "input": {},
            }
            out += self._switch(key, block)
        if function.get("arguments"):
            out.append(self._delta({"type": "input_json_delta", "partial_json": function["arguments"]}))
        return out

    def _switch(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        if self._open == kind:
            return []
        out = self._close()
        self._index += 1
        self._open = kind
        out.append(
            encode_event(
                "content_block_start", {"type": "content_block_start", "index": self._index, "content_block": block}
            )
        )
        return out

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        out: list[bytes] = []
        if self._open == "thinking":
            out.append(self._delta({"type": "signature_delta", "signature": ""}))
        self._open = None
        out.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": self._index}))
        return out

    def _delta(self, delta: dict[str, Any]) -> bytes:
        self._written += relayed_in(delta)
        return encode_event(
            "content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta}
        )


def _says_nothing(chunk: dict[str, Any]) -> bool:
    """A chunk with no content, no finish, no usage and no timings (an opening `role` delta)."""
    choices = chunk.get("choices") or []
    if chunk.get("usage") or chunk.get("timings") or chunk.get("error") or not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("finish_reason"):
            return False
        delta = choice.get("delta")
        if not isinstance(delta, dict) or any(
            delta.get(k) for k in ("content", "reasoning_content", "reasoning", "tool_calls")
        ):
            return False
    return True


def _prompt_usage(timings: object) -> dict[str, int]:
    """message_start's usage: llama-server's `timings` (timings_per_token) say the prompt's tokens,
    processed (`prompt_n`) and reused from the slot's cache (`cache_n`); elsewhere unknown yet."""
    if isinstance(timings, dict):
        processed, cached = timings.get("prompt_n"), timings.get("cache_n")
        if type(processed) is int and type(cached) is int and 0 <= processed < 2**31 and 0 <= cached < 2**31:
            return {"input_tokens": processed, "cache_read_input_tokens": cached, "output_tokens": 0}
    return {"input_tokens": 0, "output_tokens": 0}


def _error_text(error: dict[str, Any] | str) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return error
