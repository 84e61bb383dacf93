"""A stand-in for the Anthropic Messages API's rules on thinking, which cannot be reached from here.

`python -m tests.harness.anthropic_standin --port N` answers `/v1/messages` (streamed or not) and
`/v1/messages/count_tokens`, and holds each request to the rules the API documents for thinking
blocks sent back in a conversation (https://docs.claude.com/en/docs/build-with-claude/extended-thinking,
"Preserving thinking blocks", and the troubleshooting page's error messages):

- a `thinking` block must carry the signature the API issued for it, unmodified: this stand-in
  signs its own thinking (an HMAC of the text) and answers 400 "messages.N.content.M: Invalid
  `signature` in `thinking` block" for any other (a local model's, or a modified one);
  `redacted_thinking` it never issued is refused the same way;
- with thinking on (`enabled` or `adaptive`), in a tool loop (the last message holds a
  tool_result), the last assistant message must start with a thinking block, else the API's 400
  "Expected `thinking` or `redacted_thinking`, but found `text`. When `thinking` is enabled, a
  final `assistant` message must start with a thinking block ...".

It answers like a model that thinks (a signed thinking block first, when thinking is on), calls
`Read` on a.txt when asked fresh, and says "The file a.txt says hi (from the cloud)." after a tool
result. `GET /_requests` lists the bodies it received, exactly as received, and `GET /_headers`
the headers that came with them, for the tests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from tests.harness.tiny_http import TinyServer, serve, sse

SECRET = b"stand-in for the API's own signing key"
FINAL = "The file a.txt says hi (from the cloud)."
LOOP_RULE = (
    "When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the "
    "lastmost set of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks from previous "
    "turns. To avoid this requirement, disable `thinking`. Please consult our documentation at "
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
)


def sign(thinking: str) -> str:
    return "Eq" + base64.b64encode(hmac.new(SECRET, thinking.encode(), hashlib.sha256).digest()).decode()


def violation(request: dict[str, Any]) -> str | None:
    """The API's 400 message for this request's history, or None when it would take it."""
    messages = request.get("messages") or []
    for i, message in enumerate(messages):
        content = message.get("content")
        if message.get("role") != "assistant" or not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if block.get("type") == "thinking" and block.get("signature") != sign(block.get("thinking", "")):
                return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
            if block.get("type") == "redacted_thinking":
                return f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block"
    thinking = (request.get("thinking") or {}).get("type") in ("enabled", "adaptive")
    last = messages[-1] if messages else {}
    in_loop = isinstance(last.get("content"), list) and any(b.get("type") == "tool_result" for b in last["content"])
    if thinking and in_loop:
        turn = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "assistant"), None)
        if turn is not None:
            content = messages[turn]["content"]
            first = content[0].get("type") if isinstance(content, list) and content else "text"
            if first not in ("thinking", "redacted_thinking"):
                found = f"Expected `thinking` or `redacted_thinking`, but found `{first}`."
                return f"messages.{turn}.content.0.type: {found} {LOOP_RULE}"
    return None


def answer_blocks(request: dict[str, Any], turn: int) -> tuple[list[dict[str, Any]], str]:
    blocks: list[dict[str, Any]] = []
    if (request.get("thinking") or {}).get("type") in ("enabled", "adaptive"):
        thought = f"Cloud thinking, answer {turn}: what does the user need?"
        blocks.append({"type": "thinking", "thinking": thought, "signature": sign(thought)})
    last = (request.get("messages") or [{}])[-1]
    after_tool = isinstance(last.get("content"), list) and any(b.get("type") == "tool_result" for b in last["content"])
    offers_read = any(t.get("name") == "Read" for t in request.get("tools") or [])
    if offers_read and not after_tool:
        blocks.append(
            {
                "type": "tool_use",
                "id": "toolu_01" + secrets.token_hex(11),
                "name": "Read",
                "input": {"file_path": "a.txt"},
            }
        )
        return blocks, "tool_use"
    blocks.append({"type": "text", "text": FINAL})
    return blocks, "end_turn"


def events_of(message: dict[str, Any]) -> list[bytes]:
    start = {**message, "content": [], "stop_reason": None}
    out = [sse("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        empty = {
            "thinking": {"type": "thinking", "thinking": "", "signature": ""},
            "text": {"type": "text", "text": ""},
        }
        opening = empty.get(kind) or {**block, "input": {}}
        out.append(
            sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening})
        )
        deltas = {
            "thinking": [
                {"type": "thinking_delta", "thinking": block.get("thinking", "")},
                {"type": "signature_delta", "signature": block.get("signature", "")},
            ],
            "text": [{"type": "text_delta", "text": block.get("text", "")}],
            "tool_use": [{"type": "input_json_delta", "partial_json": json.dumps(block.get("input", {}))}],
        }[kind]
        for delta in deltas:
            out.append(sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": message["usage"],
    }
    out += [sse("message_delta", delta), sse("message_stop", {"type": "message_stop"})]
    return out


class StandIn(TinyServer):
    def __init__(self) -> None:
        self.received: list[str] = []
        self.headers: list[dict[str, str]] = []

    async def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        if method == "GET" and path == "/_requests":
            return await self.send_json(writer, 200, self.received)
        if method == "GET" and path == "/_headers":
            return await self.send_json(writer, 200, self.headers)
        if method != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return await self.send_json(
                writer, 404, {"type": "error", "error": {"type": "not_found_error", "message": path}}
            )
        request = json.loads(body)
        self.headers.append(headers)
        if path.endswith("count_tokens"):
            return await self.send_json(writer, 200, {"input_tokens": max(1, len(body) // 4)})
        self.received.append(body.decode())
        broken = violation(request)
        if broken:
            error = {"type": "error", "error": {"type": "invalid_request_error", "message": broken}}
            return await self.send_json(writer, 400, error)
        content, stop = answer_blocks(request, len(self.received))
        message = {
            "id": "msg_standin" + secrets.token_hex(6),
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "claude"),
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": max(1, len(body) // 4), "output_tokens": 20},
        }
        if request.get("stream"):
            return await self.send(writer, 200, "text/event-stream", b"".join(events_of(message)))
        return await self.send_json(writer, 200, message)


if __name__ == "__main__":
    serve(StandIn())
