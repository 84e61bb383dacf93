"""A model server that misbehaves on purpose, chosen per request by the model name.

`python -m tests.harness.hostile_upstream --port N` serves llama-server's and the Anthropic
API's paths (`/health`, `/props`, `/v1/models`, `/v1/messages`, `/v1/chat/completions`) and
answers each request as its `model` says:

| model            | answer                                                                      |
| ---------------- | --------------------------------------------------------------------------- |
| `gzip`           | a good answer, gzip-encoded although ccgate asked for identity              |
| `brotli`         | `content-encoding: br` over bytes that are not brotli                       |
| `endless-line`   | 200, then one line that never ends (until the client hangs up)              |
| `redirect`       | 302 to elsewhere, body `moved`                                              |
| `not-json`       | 200 labelled JSON / event-stream whose body is prose                        |
| `bad-start`      | a stream whose `message_start` has no `message` (OpenAI: `data: [1,2]`)     |
| `bad-event`      | a good start, then an event whose data is `[1,2]`                           |
| `echo-headers`   | 500 whose message echoes every request header (keys included)               |
| `huge-error`     | 500 whose message is 1 MiB with control characters                          |
| `long-call`      | a good answer that calls Read with 29 a's and a stop (the ReDoS input)      |
| `crlf-nope`      | a stream in CRLF, each line end split between two writes, calling `Nope`    |
|                  | (both faces: the Anthropic one and Chat Completions; `long-call` too)       |
| `firehose`       | a good stream start, then text deltas without end, as fast as it is read;   |
|                  | `GET /_sent`: bytes the last such stream got out so far, and how many are open |
| anything else    | a good answer: "Hello from the hostile server."                             |

It stands in for upstream faults no real llama-server produces; a real process on a real port,
so ccgate meets them through its real HTTP client.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os

from tests.harness.tiny_http import TinyServer, serve, sse

TEXT = "Hello from the hostile server."
LONG_ARG = "a" * 29 + "!"
MODES = (
    "gzip",
    "brotli",
    "endless-line",
    "redirect",
    "not-json",
    "bad-start",
    "bad-event",
    "echo-headers",
    "huge-error",
)


def anthropic_message(call: bool = False) -> dict:
    content = [{"type": "tool_use", "id": "toolu_hostile", "name": "Read", "input": {"file_path": LONG_ARG}}]
    return {
        "id": "msg_hostile",
        "type": "message",
        "role": "assistant",
        "model": "hostile",
        "content": content if call else [{"type": "text", "text": TEXT}],
        "stop_reason": "tool_use" if call else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 7},
    }


def anthropic_stream(bad: str | None = None) -> list[bytes]:
    start = {"type": "message_start", "message": {**anthropic_message(), "content": [], "stop_reason": None}}
    if bad == "bad-start":
        start = {"type": "message_start"}
    if bad in ("long-call", "crlf-nope"):
        name = "Nope" if bad == "crlf-nope" else "Read"
        block = {"type": "tool_use", "id": "toolu_hostile", "name": name, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps({"file_path": LONG_ARG})}
        return [
            sse("message_start", start),
            sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
            sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {}}),
            sse("message_stop", {"type": "message_stop"}),
        ]
    events = [
        sse("message_start", start),
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT}},
        ),
    ]
    if bad == "bad-event":
        events.append(sse("content_block_delta", "[1,2]"))
    events += [
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
    return events


def openai_call(name: str) -> dict:
    arguments = json.dumps({"file_path": LONG_ARG})
    return {"id": "call_hostile", "type": "function", "function": {"name": name, "arguments": arguments}}


def openai_completion(call: bool = False) -> dict:
    message: dict = {"role": "assistant", "content": TEXT}
    if call:
        message = {"role": "assistant", "content": None, "tool_calls": [openai_call("Read")]}
    return {
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "model": "hostile",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }


def openai_stream(bad: str | None = None) -> list[bytes]:
    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "hostile",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    if bad in ("long-call", "crlf-nope"):
        call = {"index": 0, **openai_call("Nope" if bad == "crlf-nope" else "Read")}
        return [
            sse(None, chunk({"role": "assistant", "content": None, "tool_calls": [call]})),
            sse(None, chunk({}, "tool_calls")),
            sse(None, "[DONE]"),
        ]
    events = [sse(None, "[1,2]")] if bad == "bad-start" else []
    events += [sse(None, chunk({"role": "assistant", "content": ""})), sse(None, chunk({"content": TEXT}))]
    if bad == "bad-event":
        events.append(sse(None, "[1,2]"))
    events += [sse(None, chunk({}, "stop")), sse(None, "[DONE]")]
    return events


class Hostile(TinyServer):
    sent = 0  # bytes the current `firehose` stream has written (drained into the socket)
    streaming = 0  # `firehose` streams still open (the client, ccgate, has not hung up)

    async def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        if method == "GET":
            known = {
                "/health": {"status": "ok"},
                "/props": {
                    "total_slots": 4,
                    "default_generation_settings": {"n_ctx": 65536},
                    "model_path": "hostile.gguf",
                },
                "/v1/models": {"object": "list", "data": [{"id": "hostile", "object": "model"}]},
                "/slots": [],
                "/_sent": {"sent": self.sent, "open": self.streaming},
            }
            if path in known:
                return await self.send(writer, 200, "application/json", json.dumps(known[path]).encode())
            return await self.send(writer, 404, "application/json", b'{"error": {"message": "not found"}}')
        request = json.loads(body or b"{}")
        mode = str(request.get("model", ""))
        stream = bool(request.get("stream"))
        openai = path.endswith("/chat/completions")
        if mode == "redirect":
            return await self.send(writer, 302, "text/plain", b"moved", {"location": "http://elsewhere.invalid/"})
        if mode == "echo-headers":
            echoed = "; ".join(f"{k}: {v}" for k, v in headers.items())
            error = {
                "type": "error",
                "error": {"type": "api_error", "message": f"cannot serve a request with {echoed}"},
            }
            return await self.send(writer, 500, "application/json", json.dumps(error).encode())
        if mode == "huge-error":
            message = ("\x1b[31mFAIL\x00\r\n" * 80_000)[: 1 << 20]
            error = {"type": "error", "error": {"type": "api_error", "message": message}}
            return await self.send(writer, 500, "application/json", json.dumps(error).encode())
        if mode == "not-json":
            kind = "text/event-stream" if stream else "application/json"
            return await self.send(writer, 200, kind, b"<html>this is not what you asked for</html>\n\n")
        if mode == "endless-line":
            kind = "text/event-stream" if stream else "application/json"
            return await self.endless(writer, kind)
        if mode == "firehose" and not openai:
            return await self.firehose(writer)
        if mode == "crlf-nope":
            return await self.split_crlf(writer, openai_stream(mode) if openai else anthropic_stream(mode))
        if stream:
            events = openai_stream(mode) if openai else anthropic_stream(mode)
            payload = b"".join(events)
            kind = "text/event-stream"
        else:
            payload = json.dumps((openai_completion if openai else anthropic_message)(mode == "long-call")).encode()
            kind = "application/json"
        extra: dict[str, str] = {}
        if mode == "gzip":
            payload, extra = gzip.compress(payload), {"content-encoding": "gzip"}
        elif mode == "brotli":
            payload, extra = b"\x8b\x02\x80not brotli at all", {"content-encoding": "br"}
        return await self.send(writer, 200, kind, payload, extra)

    async def split_crlf(self, writer: asyncio.StreamWriter, events: list[bytes]) -> bool:
        """Every line ends in CRLF, and every CR goes out in one write, its LF in the next."""
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        pieces = b"".join(events).replace(b"\n", b"\r\n").split(b"\r")
        for i, piece in enumerate(pieces):
            writer.write(piece + (b"\r" if i < len(pieces) - 1 else b""))
            await writer.drain()
            await asyncio.sleep(0.005)  # the server's pacing: each piece its own TCP segment, usually
        return False

    async def firehose(self, writer: asyncio.StreamWriter) -> bool:
        """Writes only as fast as the reader takes it (drain): what it got out shows backpressure."""
        self.sent = 0
        start = anthropic_stream("firehose")[:2]  # message_start, content_block_start
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        for event in start:
            writer.write(event)
        self.streaming += 1
        try:
            while True:  # until ccgate hangs up; random text, so no runaway guard takes it for a loop
                text = {"type": "text_delta", "text": os.urandom(512).hex()}
                delta = sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": text})
                writer.write(delta)
                await writer.drain()
                self.sent += len(delta)
        finally:
            self.streaming -= 1

    async def endless(self, writer: asyncio.StreamWriter, kind: str) -> bool:
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\nconnection: close\r\n\r\n".encode())
        writer.write(b'data: {"type": "message_start", "message": "' if kind == "text/event-stream" else b'{"a": "')
        block = b"x" * 65536
        while True:  # until ccgate hangs up
            writer.write(block)
            await writer.drain()


if __name__ == "__main__":
    serve(Hostile())
