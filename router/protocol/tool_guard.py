"""The tool-call guard: an Anthropic event stream in, the same stream with only valid tool calls out.

Text streams on at once, except what may be the start of a call written as text (see
tool_text); structured `tool_use` blocks are held until complete, then checked against the
request's tools (tool_check) and released untouched when valid, re-encoded when repaired. Calls
found in text become proper `tool_use` blocks and the stop reason becomes `tool_use`.

Nothing at all is released before the first piece of content (text, thinking or a checked
call): a call that fails before then raises ToolCallError while the client has received
nothing, so the request can still go to another backend.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import msgspec

from router.protocol.errors import BadUpstreamResponse
from router.protocol.sse import SSEDecoder, encode_event, raw_event
from router.protocol.tool_check import ToolBox, ToolCallError
from router.protocol.tool_text import extract, hold_from

CONVERTED, REPAIRED, PASSED, FAILED = "converted", "repaired", "passed", "failed"
UNCHECKED = "unchecked"  # passed as sent: the tool's schema could not be used to check it


@dataclass(slots=True)
class _Text:
    out: int | None = None  # output index once the block was started downstream
    pending: str = ""  # text not released yet
    sure: bool = False  # a call marker was seen: hold the rest until the block ends
    rest: list[str] = field(default_factory=list)  # what came after that, joined once at the end


@dataclass(slots=True)
class _ToolUse:
    id: str
    name: str
    raw: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)  # (event, payload, data)
    arguments: list[str] = field(default_factory=list)


class ToolCallGuard:
    """Feed upstream chunks of an Anthropic event stream; get back the chunks for the client.

    `outcomes` receives one label per call released: passed, repaired or converted.
    """

    def __init__(self, tools: ToolBox, outcomes: list[str] | None = None) -> None:
        self.tools = tools
        self.outcomes: list[str] = outcomes if outcomes is not None else []
        self._decoder = SSEDecoder()
        self._held: list[bytes] | None = []  # output kept back until content is committed
        self._next = 0  # next output block index
        self._index: dict[int, int] = {}  # upstream index → output index, for passed-through blocks
        # Open text and tool_use blocks by upstream index: llama-server opens a tool_use block while
        # its thinking block is still open (the signature and the stop come after), so blocks
        # are told apart by index, never by order.
        self._blocks: dict[int, _Text | _ToolUse] = {}
        self._converted = False
        self._data = ""  # the current event's data as received, to pass on unchanged

    def feed(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        for event in self._decoder.feed(chunk):
            self._checked(event.event or "", event.data, out)
        return self._release(out)

    def finish(self) -> list[bytes]:
        out: list[bytes] = []
        for event in self._decoder.flush():
            self._checked(event.event or "", event.data, out)
        held, self._held = self._held or [], None
        return held + out

    def _checked(self, name: str, data: str, out: list[bytes]) -> None:
        try:
            self._event(name, data, out)
        except ToolCallError:
            if self._held is None:
                self.outcomes.append(FAILED)  # after output began; before, the request moves on
            raise

    def _release(self, out: list[bytes]) -> list[bytes]:
        if self._held is None:
            return out
        self._held += out
        return []

    def _event(self, name: str, data: str, out: list[bytes]) -> None:
        if name in ("content_block_start", "content_block_delta", "content_block_stop", "message_delta"):
            self._data = data
            try:
                payload = msgspec.json.decode(data)
            except msgspec.DecodeError:
                raise BadUpstreamResponse(f"{name} event whose data is not JSON") from None
            if not isinstance(payload, dict):
                raise BadUpstreamResponse(f"{name} event whose data is not an object")
            getattr(self, "_" + name)(payload, out)
        else:
            out.append(raw_event(name, data))

    def _content_block_start(self, payload: dict[str, Any], out: list[bytes]) -> None:
        block = payload.get("content_block") or {}
        kind = block.get("type")
        upstream = payload.get("index", 0)
        if kind == "text":
            text = self._blocks[upstream] = _Text()
            if block.get("text"):
                self._text(text, block["text"], out)
        elif kind == "tool_use":
            call = self._blocks[upstream] = _ToolUse(block.get("id") or _tool_id(), block.get("name") or "")
            call.raw.append(("content_block_start", payload, self._data))
        else:
            self._index[upstream] = self._take_index()
            self._pass("content_block_start", payload, out)

    def _content_block_delta(self, payload: dict[str, Any], out: list[bytes]) -> None:
        delta = payload.get("delta") or {}
        block = self._blocks.get(payload.get("index", 0))
        if isinstance(block, _Text) and delta.get("type") == "text_delta":
            self._text(block, delta.get("text") or "", out, payload)
        elif isinstance(block, _ToolUse):
            block.raw.append(("content_block_delta", payload, self._data))
            if delta.get("type") == "input_json_delta":
                block.arguments.append(delta.get("partial_json") or "")
        else:
            if delta.get("type") in ("thinking_delta", "text_delta"):
                self._start_output(out)
            self._pass("content_block_delta", payload, out)

    def _content_block_stop(self, payload: dict[str, Any], out: list[bytes]) -> None:
        block = self._blocks.pop(payload.get("index", 0), None)
        if isinstance(block, _Text):
            self._end_text(block, out)
        elif isinstance(block, _ToolUse):
            self._end_tool_use(block, payload, out)
        else:
            self._pass("content_block_stop", payload, out)

    def _message_delta(self, payload: dict[str, Any], out: list[bytes]) -> None:
        delta = payload.get("delta") or {}
        if self._converted and delta.get("stop_reason") in ("end_turn", "stop_sequence", None):
            delta = {**delta, "stop_reason": "tool_use", "stop_sequence": None}
            out.append(encode_event("message_delta", {**payload, "delta": delta}))
            return
        out.append(raw_event("message_delta", self._data))

    # text blocks

    def _text(self, block: _Text, text: str, out: list[bytes], payload: dict[str, Any] | None = None) -> None:
        if block.sure:
            block.rest.append(text)
            return
        block.pending += text
        hold = hold_from(block.pending, at_block_start=block.out is None)
        if hold is None and payload is not None and block.pending == text and block.out == payload.get("index"):
            block.pending = ""
            out.append(raw_event("content_block_delta", self._data))  # plain text, relayed as received
            return
        if hold is None:
            released, block.pending = block.pending, ""
        else:
            at, block.sure = hold
            released, block.pending = block.pending[:at], block.pending[at:]
        if block.out is None and not released.strip():
            block.pending = released + block.pending  # leading blank lines alone commit nothing
            return
        self._emit_text(block, released, out)

    def _emit_text(self, block: _Text, text: str, out: list[bytes]) -> None:
        if not text:
            return
        if block.out is None:
            self._start_output(out)
            block.out = self._take_index()
            start = {"type": "content_block_start", "index": block.out, "content_block": {"type": "text", "text": ""}}
            out.append(encode_event("content_block_start", start))
        delta = {"type": "content_block_delta", "index": block.out, "delta": {"type": "text_delta", "text": text}}
        out.append(encode_event("content_block_delta", delta))

    def _end_text(self, block: _Text, out: list[bytes]) -> None:
        block.pending += "".join(block.rest)
        found = extract(block.pending, self.tools.names) if block.pending else None
        if found is None:
            self._emit_text(block, block.pending, out)
            self._close_text(block, out)
            return
        checked = [self.tools.check(call.name, call.arguments) for call in found.calls]
        prose_went_out = block.out is not None
        if not prose_went_out:  # reasoning comes first, unless prose already went out
            self._emit_thinking(found.thinking, out)
        self._emit_text(block, found.before if found.before.strip() else "", out)
        self._close_text(block, out)
        if prose_went_out:
            self._emit_thinking(found.thinking, out)
        for call in checked:
            self._emit_tool_use(_tool_id(), call.name, call.input, out)
            self.outcomes.append(CONVERTED)
        self._converted = self._converted or bool(checked)
        if found.after.strip():
            trailing = _Text()
            self._emit_text(trailing, found.after, out)
            self._close_text(trailing, out)

    def _emit_thinking(self, thoughts: list[str], out: list[bytes]) -> None:
        """Reasoning the model wrote as text, as thinking blocks (signed later, by the marker)."""
        for thought in thoughts:
            self._start_output(out)
            index = self._take_index()
            start = {"type": "thinking", "thinking": "", "signature": ""}
            out.append(
                encode_event(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
                )
            )
            for delta in (
                {"type": "thinking_delta", "thinking": thought},
                {"type": "signature_delta", "signature": ""},
            ):
                payload = {"type": "content_block_delta", "index": index, "delta": delta}
                out.append(encode_event("content_block_delta", payload))
            out.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": index}))

    def _close_text(self, block: _Text, out: list[bytes]) -> None:
        if block.out is not None:
            out.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": block.out}))

    # tool_use blocks

    def _end_tool_use(self, block: _ToolUse, stop: dict[str, Any], out: list[bytes]) -> None:
        checked = self.tools.check(block.name, "".join(block.arguments))
        self._start_output(out)
        if checked.repaired:
            self._emit_tool_use(block.id, checked.name, checked.input, out)
            self.outcomes.append(REPAIRED)
            return
        index = self._take_index()
        for name, payload, data in (*block.raw, ("content_block_stop", stop, self._data)):
            unchanged = payload.get("index") == index
            out.append(raw_event(name, data) if unchanged else encode_event(name, {**payload, "index": index}))
        self.outcomes.append(PASSED if checked.checked else UNCHECKED)

    def _emit_tool_use(self, id: str, name: str, arguments: dict[str, Any], out: list[bytes]) -> None:
        self._start_output(out)
        index = self._take_index()
        block = {"type": "tool_use", "id": id, "name": name, "input": {}}
        out.append(
            encode_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        delta = {"type": "input_json_delta", "partial_json": msgspec.json.encode(arguments).decode()}
        out.append(encode_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        out.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": index}))

    # plumbing

    def _start_output(self, out: list[bytes]) -> None:
        """Content goes out now: everything held so far goes out ahead of it."""
        if self._held is not None:
            out[:0] = self._held
            self._held = None

    def _take_index(self) -> int:
        index, self._next = self._next, self._next + 1
        return index

    def _pass(self, name: str, payload: dict[str, Any], out: list[bytes]) -> None:
        upstream = payload.get("index", 0)
        index = self._index.get(upstream, upstream)
        same = index == upstream
        out.append(raw_event(name, self._data) if same else encode_event(name, {**payload, "index": index}))


def _tool_id() -> str:
    return "toolu_" + secrets.token_hex(12)


def guard_message(message: dict[str, Any], tools: ToolBox, outcomes: list[str]) -> dict[str, Any]:
    """The same checks on a whole (non-streamed) Anthropic message."""
    content: list[dict[str, Any]] = []
    converted = False
    for block in message.get("content") or []:
        if block.get("type") == "tool_use":
            checked = tools.check(block.get("name") or "", block.get("input"))
            content.append({**block, "name": checked.name, "input": checked.input})
            outcomes.append(REPAIRED if checked.repaired else PASSED if checked.checked else UNCHECKED)
            continue
        found = extract(block.get("text") or "", tools.names) if block.get("type") == "text" else None
        if found is None:
            content.append(block)
            continue
        calls = [tools.check(call.name, call.arguments) for call in found.calls]
        content += [{"type": "thinking", "thinking": t, "signature": ""} for t in found.thinking]
        if found.before.strip():
            content.append({"type": "text", "text": found.before})
        for call in calls:
            content.append({"type": "tool_use", "id": _tool_id(), "name": call.name, "input": call.input})
            outcomes.append(CONVERTED)
        if found.after.strip():
            content.append({"type": "text", "text": found.after})
        converted = converted or bool(calls)
    stop = message.get("stop_reason")
    if converted and stop in ("end_turn", "stop_sequence", None):
        stop = "tool_use"
    return {**message, "content": content, "stop_reason": stop}
