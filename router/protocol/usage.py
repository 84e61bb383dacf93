"""Token usage read off an Anthropic answer (whole, or streamed as it passes) (pure).

Every count a backend reports is kept apart, because each is billed differently: input (not
from a cache), cache reads (`cached`: the Anthropic API's `cache_read_input_tokens`, billed at a
tenth of input; llama-server's own prompt-cache reuse, free), cache writes (`cache_write`: the
5-minute cache, 1.25 times input; `cache_write_1h`: the 1-hour one, twice input) and output.

An answer that ends before its last `message_delta` (the client left, the upstream broke off)
has no final output count: `settle` then counts what was relayed (its text, thinking and tool
input, at ~3.8 bytes a token) and marks the count as estimated.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from router.protocol.errors import BadUpstreamResponse
from router.protocol.estimate import BYTES_PER_TOKEN
from router.protocol.sse import SSEDecoder

WANTED = ("message_start", "message_delta")
TOKEN_KINDS = ("input", "cached", "cache_write", "cache_write_1h", "output")
DELTA_FIELDS = ("text", "thinking", "partial_json")


@dataclass(slots=True)
class Usage:
    input: int = 0
    output: int = 0
    cached: int = 0  # prompt tokens read from a cache
    cache_write: int = 0  # prompt tokens written to the (5-minute) cache
    cache_write_1h: int = 0  # ... to the 1-hour cache
    model: str | None = None  # the model that answered, as the backend names it
    stop_reason: str | None = None
    final: bool = False  # the answer's own final count arrived (a whole message, or message_delta's)
    relayed: int = 0  # characters of content (text, thinking, tool input) that went by
    estimated: int = 0  # output tokens counted from `relayed` because no final count came

    @property
    def total(self) -> int:
        return self.input + self.cached + self.cache_write + self.cache_write_1h + self.output

    def counts(self) -> Iterator[tuple[str, int]]:
        """(kind, tokens) of each kind this answer used, in TOKEN_KINDS order."""
        for kind in TOKEN_KINDS:
            n = getattr(self, kind)
            if n:
                yield kind, n

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
        written = _int(usage.get("cache_creation_input_tokens"), self.cache_write + self.cache_write_1h)
        split = usage.get("cache_creation")
        if isinstance(split, dict):  # the API says which cache: 5-minute and 1-hour writes
            self.cache_write_1h = _int(split.get("ephemeral_1h_input_tokens"), self.cache_write_1h)
            self.cache_write = max(0, written - self.cache_write_1h)
        else:
            self.cache_write = max(0, written - self.cache_write_1h)

    def settle(self) -> None:
        """At the answer's end: with no final count, the output is what was relayed, estimated."""
        if self.final or not self.relayed:
            return
        guess = math.ceil(self.relayed / BYTES_PER_TOKEN)
        if guess > self.output:
            self.estimated = guess - self.output
            self.output = guess
        self.final = True


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
            if event.event == "content_block_delta":
                self.usage.relayed += relayed_in(data.get("delta"))
                continue
            if event.event not in WANTED:
                continue
            message = data.get("message")
            if isinstance(message, dict):
                self.usage.take(message)
            else:
                delta = data.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                    self.usage.stop_reason = delta["stop_reason"]
                usage = data.get("usage")
                self.usage.update(usage)
                if isinstance(usage, dict) and "output_tokens" in usage:
                    self.usage.final = True


def relayed_in(delta: object) -> int:
    """Characters of content a content_block_delta's delta carries."""
    if not isinstance(delta, dict):
        return 0
    return sum(len(value) for field in DELTA_FIELDS if isinstance(value := delta.get(field), str))


def usage_of_message(body: bytes) -> Usage:
    usage = Usage(final=True)
    try:
        message = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return usage
    if isinstance(message, dict):
        usage.take(message)
    return usage


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
