"""The three ingress dialects: how each one's body becomes the canonical request, and how the
canonical answer goes back to the caller in its own shape.

Anthropic Messages is the canonical shape, so its body passes untouched. Chat Completions and
Responses are converted once here (protocol/chat_*, protocol/responses_*); the answer, whole or
streamed, is converted back as it passes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from router.backends.base import Reply
from router.protocol.anthropic import decode_body
from router.protocol.chat_reply import ChatStream, chat_completion
from router.protocol.chat_request import chat_to_canonical
from router.protocol.errors import BadUpstreamResponse, openai_error_body
from router.protocol.responses_reply import ResponsesStream, response_object
from router.protocol.responses_request import responses_to_canonical
from router.protocol.sse import Event, SSEDecoder, encode_data


@dataclass(slots=True)
class Parsed:
    canonical: dict[str, Any]  # the Anthropic-shaped request
    body: bytes  # its bytes, as an Anthropic backend receives them
    client: dict[str, Any]  # the body as the client sent it
    dropped_tools: list[str] = field(default_factory=list)  # hosted tools no backend here can run


class Stream(Protocol):
    done: bool

    def feed(self, event: Event) -> list[bytes]: ...

    def finish(self) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str  # anthropic | chat | responses (a span attribute and log field)
    openai: bool  # errors in OpenAI's shape
    to_canonical: Callable[[dict[str, Any]], tuple[dict[str, Any], list[str]]] | None
    whole: Callable[[dict[str, Any], dict[str, Any], str], dict[str, Any]] | None = None  # message, request, model
    stream: Callable[[dict[str, Any], str], Stream] | None = None  # request, model
    cut_off: Callable[[str], list[bytes]] = lambda message: []  # the stream ended before its end

    def parse(self, body: bytes) -> Parsed:
        client = decode_body(body)
        if self.to_canonical is None:
            return Parsed(client, body, client)
        canonical, dropped = self.to_canonical(client)
        return Parsed(canonical, msgspec.json.encode(canonical), client, dropped)

    def answer(self, reply: Reply, parsed: Parsed) -> Reply:
        """The reply in this dialect (the Anthropic one is returned as it is)."""
        model = str(parsed.client.get("model", ""))
        if self.whole is None or self.stream is None:
            return reply
        if not reply.streaming:
            try:
                message = msgspec.json.decode(reply.body)
            except msgspec.DecodeError:
                raise BadUpstreamResponse("the backend's answer is not JSON") from None
            reply.body = msgspec.json.encode(self.whole(message, parsed.client, model))
            reply.content_type = "application/json"
            return reply
        translator = self.stream(parsed.client, model)
        decoder = SSEDecoder()
        first = b"".join(out for event in decoder.feed(reply.first) for out in translator.feed(event))
        assert reply.rest is not None
        reply.rest = _translated(reply.rest, decoder, translator, self.cut_off)
        reply.first = first
        reply.content_type = "text/event-stream"
        return reply


async def _translated(
    chunks: AsyncIterator[bytes], decoder: SSEDecoder, translator: Stream, cut_off: Callable[[str], list[bytes]]
) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            out = [b for event in decoder.feed(chunk) for b in translator.feed(event)]
            if out:
                yield b"".join(out)
        out = [b for event in decoder.flush() for b in translator.feed(event)]
        if not translator.done:
            out += cut_off("the backend's stream ended before the answer was complete")
        if out:
            yield b"".join(out)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


def _chat_cut_off(message: str) -> list[bytes]:
    return [encode_data(openai_error_body(502, message)), b"data: [DONE]\n\n"]


def _responses_cut_off(message: str) -> list[bytes]:
    error = {"code": "server_error", "message": message}
    return [
        b"event: response.failed\ndata: "
        + msgspec.json.encode({"type": "response.failed", "response": {"status": "failed", "error": error}})
        + b"\n\n"
    ]


def _chat(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    return chat_to_canonical(body), []


def _chat_stream(request: dict[str, Any], model: str) -> Stream:
    options = request.get("stream_options")
    return ChatStream(model, isinstance(options, dict) and options.get("include_usage") is True)


ANTHROPIC = Dialect("anthropic", openai=False, to_canonical=None)
CHAT = Dialect(
    "chat",
    openai=True,
    to_canonical=_chat,
    whole=lambda message, request, model: chat_completion(message, model),
    stream=_chat_stream,
    cut_off=_chat_cut_off,
)
RESPONSES = Dialect(
    "responses",
    openai=True,
    to_canonical=responses_to_canonical,
    whole=response_object,
    stream=ResponsesStream,
    cut_off=_responses_cut_off,
)


BY_PATH = {"/v1/messages": ANTHROPIC, "/v1/chat/completions": CHAT, "/v1/responses": RESPONSES}
BY_NAME = {d.name: d for d in BY_PATH.values()}


def dialect_for(path: str | None, body: dict[str, Any]) -> Dialect:
    """The dialect of a captured request: its path when the capture has one, else its shape."""
    if path and path.split("?")[0].rstrip("/") in BY_PATH:
        return BY_PATH[path.split("?")[0].rstrip("/")]
    if "input" in body and "messages" not in body:
        return RESPONSES
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    openai_tools = any(isinstance(t, dict) and isinstance(t.get("function"), dict) for t in tools)
    openai_roles = any(isinstance(m, dict) and m.get("role") in ("tool", "developer") for m in messages)
    first_system = bool(messages) and isinstance(messages[0], dict) and messages[0].get("role") == "system"
    return CHAT if openai_tools or openai_roles or first_system or "max_completion_tokens" in body else ANTHROPIC
