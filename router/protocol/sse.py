"""Server-sent events: an incremental decoder for upstream streams and an encoder."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Any

import msgspec

from router.protocol.errors import BadUpstreamResponse

MAX_LINE = 8 * 1024 * 1024  # characters in one line: no real event comes close
MAX_EVENT = 16 * 1024 * 1024  # characters of data in one event


@dataclass(slots=True)
class Event:
    event: str | None
    data: str


class SSEDecoder:
    """Feed raw bytes as they arrive; get back every event completed so far.

    Handles events, characters and CRLF pairs split across chunks, CR line endings, multi-line
    data and comments. Linear in the input: each chunk is scanned once, and an unfinished line
    is kept as pieces joined once it ends. A line or event beyond the limits is an upstream
    that will not stop: BadUpstreamResponse, rather than memory and CPU without bound.
    """

    def __init__(self, max_line: int = MAX_LINE, max_event: int = MAX_EVENT) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span chunks
        self._pieces: list[str] = []  # the unfinished line
        self._pending = 0  # its length
        self._after_cr = False  # the last chunk ended in CR: a LF first in the next one ends no line
        self._event: str | None = None
        self._data: list[str] = []
        self._data_size = 0
        self.max_line = max_line
        self.max_event = max_event

    def feed(self, chunk: bytes) -> list[Event]:
        text = self._utf8.decode(chunk)
        if not text:
            return []
        if self._after_cr and text[0] == "\n":
            text = text[1:]
        self._after_cr = text.endswith("\r")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        tail = lines.pop()  # unfinished (empty when the chunk ended a line)
        events: list[Event] = []
        for line in lines:
            if self._pieces:
                self._pieces.append(line)
                self._check_line(len(line))
                line = "".join(self._pieces)
                self._pieces, self._pending = [], 0
            elif len(line) > self.max_line:
                self._check_line(len(line))
            event = self._line(line)
            if event is not None:
                events.append(event)
        if tail:
            self._pieces.append(tail)
            self._check_line(len(tail))
        return events

    def flush(self) -> list[Event]:
        """Events left when the stream ends without a final blank line."""
        events = self.feed(b"\n") if self._pieces else []
        if self._data:
            events.append(Event(self._event, "\n".join(self._data)))
            self._event, self._data, self._data_size = None, [], 0
        return events

    def _check_line(self, added: int) -> None:
        self._pending += added
        if self._pending > self.max_line:
            raise BadUpstreamResponse(f"the upstream's event stream has a line over {self.max_line} characters")

    def _line(self, line: str) -> Event | None:
        if not line:
            if not self._data and self._event is None:
                return None
            event = Event(self._event, "\n".join(self._data))
            self._event, self._data, self._data_size = None, [], 0
            return event
        if line[0] == ":":
            return None
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value)
            if self._data_size > self.max_event:
                raise BadUpstreamResponse(f"the upstream sent an event over {self.max_event} characters")
        elif name == "event":
            self._event = value
        return None


def object_of(data: str) -> dict[str, Any]:
    """An event's data as a JSON object; {} when it is not one (for readers that only look)."""
    try:
        payload = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return {}
    return payload if isinstance(payload, dict) else {}


def encode_event(event: str, payload: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(payload) + b"\n\n"


def raw_event(name: str, data: str) -> bytes:
    """An event re-emitted as received: its name (if any) and its data, untouched."""
    return f"event: {name}\ndata: {data}\n\n".encode() if name else f"data: {data}\n\n".encode()


def encode_data(payload: object) -> bytes:
    """An OpenAI-style event: data only."""
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"
