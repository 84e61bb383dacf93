"""Marking what a local backend answers, so it is known for what it is later (pure).

Each thinking block gets ccgate's signature (llama-server sends an empty one, OpenAI-dialect
servers none at all) and each tool call an id of ccgate's own: see protocol/handoff for why.
Streams are rewritten event by event; only the events that carry a thinking block's signature
or a tool call's id are re-encoded, every other event is relayed as it came.
"""

from __future__ import annotations

from typing import Any

import msgspec

from router.protocol.handoff import Marks
from router.protocol.sse import SSEDecoder, encode_event, object_of, raw_event


class ReplyMarker:
    """Feed an Anthropic event stream's chunks; get back the same stream, marked."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks
        self._decoder = SSEDecoder()
        self._thinking: dict[int, list[str]] = {}  # open thinking blocks by index: their text so far
        self._signed: set[int] = set()

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._event(e.event or "", e.data) for e in self._decoder.feed(chunk))

    def finish(self) -> bytes:
        return b"".join(self._event(e.event or "", e.data) for e in self._decoder.flush())

    def _event(self, name: str, data: str) -> bytes:
        if name == "content_block_start":
            return self._start(data)
        if name == "content_block_delta" and self._thinking:
            if '"thinking_delta"' in data:
                payload = object_of(data)
                self._thinking.get(payload.get("index"), []).append(str(payload.get("delta", {}).get("thinking", "")))
            elif '"signature_delta"' in data:
                payload = object_of(data)
                index = payload.get("index")
                if index in self._thinking:
                    self._signed.add(index)
                    delta = {"type": "signature_delta", "signature": self._signature(index)}
                    return encode_event(name, {**payload, "delta": delta})
        elif name == "content_block_stop" and self._thinking:
            index = object_of(data).get("index")
            if index in self._thinking:
                out = b""
                if index not in self._signed:  # a signature the client must have, before the block ends
                    delta = {"type": "signature_delta", "signature": self._signature(index)}
                    payload = {"type": "content_block_delta", "index": index, "delta": delta}
                    out = encode_event("content_block_delta", payload)
                del self._thinking[index]
                self._signed.discard(index)
                return out + raw_event(name, data)
        return raw_event(name, data)

    def _start(self, data: str) -> bytes:
        if '"thinking"' not in data and '"tool_use"' not in data:
            return raw_event("content_block_start", data)
        payload = object_of(data)
        block = payload.get("content_block")
        if not isinstance(block, dict):
            return raw_event("content_block_start", data)
        if block.get("type") == "thinking":
            self._thinking[payload.get("index")] = [str(block.get("thinking") or "")]
            block = {**block, "signature": ""}
        elif block.get("type") == "tool_use":
            block = {**block, "id": self.marks.tool_id()}
        else:
            return raw_event("content_block_start", data)
        return encode_event("content_block_start", {**payload, "content_block": block})

    def _signature(self, index: Any) -> str:
        return self.marks.signature("".join(self._thinking.get(index, [])))


def mark_message(body: bytes, marks: Marks) -> bytes:
    """A whole Anthropic message from a local backend, marked the same way."""
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list) or not any(
        isinstance(b, dict) and b.get("type") in ("thinking", "tool_use") for b in content
    ):
        return body
    marked = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "thinking":
            block = {**block, "signature": marks.signature(str(block.get("thinking") or ""))}
        elif isinstance(block, dict) and block.get("type") == "tool_use":
            block = {**block, "id": marks.tool_id()}
        marked.append(block)
    return msgspec.json.encode({**message, "content": marked})
