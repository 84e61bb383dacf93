"""Anthropic SSE events → the one Message object a non-streaming client expects (pure)."""

from __future__ import annotations

from typing import Any

import msgspec

from router.protocol.from_openai import BadUpstreamResponse
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
            self._message = dict(data["message"])
            self._message["content"] = []
        elif kind == "content_block_start":
            self._blocks[data["index"]] = dict(data["content_block"])
        elif kind == "content_block_delta":
            self._delta(data["index"], data["delta"])
        elif kind == "content_block_stop":
            self._finish_block(data["index"])
        elif kind == "message_delta":
            message = self._started()
            message.update(data.get("delta") or {})
            message["usage"] = {**(message.get("usage") or {}), **(data.get("usage") or {})}
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
            block["text"] = block.get("text", "") + delta.get("text", "")
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            block["signature"] = block.get("signature", "") + delta.get("signature", "")
        elif kind == "input_json_delta":
            self._json.setdefault(index, []).append(delta.get("partial_json", ""))
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
