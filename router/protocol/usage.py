"""Token usage read off an Anthropic answer (whole, or streamed as it passes) (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from router.protocol.sse import SSEDecoder

WANTED = ("message_start", "message_delta")


@dataclass(slots=True)
class Usage:
    input: int = 0
    output: int = 0
    cached: int = 0

    def update(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        self.input = _int(usage.get("input_tokens"), self.input)
        self.output = _int(usage.get("output_tokens"), self.output)
        self.cached = _int(usage.get("cache_read_input_tokens"), self.cached)


class UsageTap:
    """Feed the stream's chunks; `usage` holds the latest counts (message_delta's are cumulative)."""

    def __init__(self, usage: Usage | None = None) -> None:
        self.usage = usage if usage is not None else Usage()
        self._decoder = SSEDecoder()

    def feed(self, chunk: bytes) -> None:
        for event in self._decoder.feed(chunk):
            if event.event not in WANTED:
                continue
            try:
                data = msgspec.json.decode(event.data)
            except msgspec.DecodeError:
                continue
            if isinstance(data, dict):
                message = data.get("message")
                self.usage.update(message.get("usage") if isinstance(message, dict) else data.get("usage"))


def usage_of_message(body: bytes) -> Usage:
    usage = Usage()
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return usage
    if isinstance(message, dict):
        usage.update(message.get("usage"))
    return usage


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
