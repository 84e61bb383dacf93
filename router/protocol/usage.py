"""Token usage read off an Anthropic answer (whole, or streamed as it passes) (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from router.protocol.errors import BadUpstreamResponse
from router.protocol.sse import SSEDecoder

WANTED = ("message_start", "message_delta")


@dataclass(slots=True)
class Usage:
    input: int = 0
    output: int = 0
    cached: int = 0
    model: str | None = None  # the model that answered, as the backend names it
    stop_reason: str | None = None

    def take(self, message: dict) -> None:
        """What a message (or message_start's) says: its model, stop reason and usage."""
        if isinstance(message.get("model"), str):
            self.model = message["model"]
        if isinstance(message.get("stop_reason"), str):
            self.stop_reason = message["stop_reason"]
        self.update(message.get("usage"))

    def update(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        self.input = _int(usage.get("input_tokens"), self.input)
        self.output = _int(usage.get("output_tokens"), self.output)
        self.cached = _int(usage.get("cache_read_input_tokens"), self.cached)


class UsageTap:
    """Feed the stream's chunks; `usage` holds the latest counts (message_delta's are cumulative).

    Every event of an Anthropic stream carries a JSON object: one that does not is an upstream
    gone wrong (BadUpstreamResponse), which the relay turns into an error event for the client
    rather than passing on what its SDK cannot read."""

    def __init__(self, usage: Usage | None = None) -> None:
        self.usage = usage if usage is not None else Usage()
        self._decoder = SSEDecoder()

    def feed(self, chunk: bytes) -> None:
        for event in self._decoder.feed(chunk):
            try:
                data = msgspec.json.decode(event.data) if event.data else {}
            except msgspec.DecodeError:
                data = None
            if not isinstance(data, dict):
                raise BadUpstreamResponse(f"a {event.event or 'data'} event whose data is not a JSON object")
            if event.event not in WANTED:
                continue
            message = data.get("message")
            if isinstance(message, dict):
                self.usage.take(message)
            else:
                delta = data.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                    self.usage.stop_reason = delta["stop_reason"]
                self.usage.update(data.get("usage"))


def usage_of_message(body: bytes) -> Usage:
    usage = Usage()
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return usage
    if isinstance(message, dict):
        usage.take(message)
    return usage


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
