"""Anthropic SSE events → the one Message object a non-streaming client expects (pure)."""

from __future__ import annotations

from typing import Any

import msgspec

from router.protocol.errors import BadUpstreamResponse
from router.protocol.sse import Event


class MessageAggregator:
    """Feed the events of one streamed message; `message()` is the non-streamed equivalent."""

    def __init__(self) -> None:
        self._message: dict[str, Any] | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._json: dict[int, list[str]] = {}
        self.done = False

    def feed(self, event: Event) -> None:
        if not event.data or event.event == "ping":
            return
        try:
            data = msgspec.json.decode(event.data)
        except msgspec.DecodeError:
            raise BadUpstreamResponse("stream event is not JSON") from None
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "error" or event.event == "error":
            error = data.get("error") if isinstance(data, dict) else None
            raise BadUpstreamResponse(error.get("message", "error event") if isinstance(error, dict) else "error event")
        if kind == "message_start":
            self._message = dict(_field(data, "message", dict))
            self._message["content"] = []
        elif kind == "content_block_start":
            self._blocks[_field(data, "index", int)] = dict(_field(data, "content_block", dict))
        elif kind == "content_block_delta":
            self._delta(_field(data, "index", int), _field(data, "delta", dict))
        elif kind == "content_block_stop":
            self._finish_block(_field(data, "index", int))
        elif kind == "message_delta":
            message = self._started()
            delta, usage = data.get("delta") or {}, data.get("usage") or {}
            if not isinstance(delta, dict) or not isinstance(usage, dict):
                raise BadUpstreamResponse("message_delta with a delta or usage that is not an object")
            message.update(delta)
            previous = message.get("usage") if isinstance(message.get("usage"), dict) else {}
            message["usage"] = {**previous, **usage}
        elif kind == "message_stop":
            self.done = True

    def message(self) -> dict[str, Any]:
        if not self.done:
            raise BadUpstreamResponse("stream ended before message_stop")
        message = self._started()
        for index in sorted(self._blocks):
            self._finish_block(index)
        return message

    def _started(self) -> dict[str, Any]:
        if self._message is None:
            raise BadUpstreamResponse("stream did not start with message_start")
        return self._message

    def _delta(self, index: int, delta: dict[str, Any]) -> None:
        block = self._blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = _text(block.get("text", "")) + _text(delta.get("text", ""))
        elif kind == "thinking_delta":
            block["thinking"] = _text(block.get("thinking", "")) + _text(delta.get("thinking", ""))
        elif kind == "signature_delta":
            block["signature"] = _text(block.get("signature", "")) + _text(delta.get("signature", ""))
        elif kind == "input_json_delta":
            self._json.setdefault(index, []).append(_text(delta.get("partial_json", "")))
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def _finish_block(self, index: int) -> None:
        block = self._blocks.pop(index, None)
        if block is None:
            return
        if block.get("type") in ("tool_use", "server_tool_use"):
            text = "".join(self._json.pop(index, []))
            try:
                block["input"] = msgspec.json.decode(text) if text else block.get("input") or {}
            except msgspec.DecodeError:
                raise BadUpstreamResponse(f"tool {block.get('name')!r} came back with invalid JSON input") from None
        self._started()["content"].append(block)


def _field(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadUpstreamResponse(f"{data.get('type')} event without a valid `{key}`")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise BadUpstreamResponse(f"expected text in a stream delta, got {type(value).__name__}")
    return value
