"""Server-sent events: an incremental decoder for upstream streams and an encoder."""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import msgspec


@dataclass(slots=True)
class Event:
    event: str | None
    data: str


class SSEDecoder:
    """Feed raw bytes as they arrive; get back every event completed so far.

    Handles events and characters split across chunks, CRLF and CR line endings, multi-line
    data and comments.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span chunks
        self._buffer = ""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += self._utf8.decode(chunk)
        self._buffer = self._buffer.replace("\r\n", "\n").replace("\r", "\n")
        events: list[Event] = []
        while True:
            newline = self._buffer.find("\n")
            if newline < 0:
                return events
            line, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def flush(self) -> list[Event]:
        """Events left when the stream ends without a final blank line."""
        events = self.feed(b"\n") if self._buffer else []
        if self._data:
            events.append(Event(self._event, "\n".join(self._data)))
            self._event, self._data = None, []
        return events

    def _line(self, line: str) -> Event | None:
        if not line:
            if not self._data and self._event is None:
                return None
            event = Event(self._event, "\n".join(self._data))
            self._event, self._data = None, []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None


def encode_event(event: str, payload: object) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + msgspec.json.encode(payload) + b"\n\n"


def encode_data(payload: object) -> bytes:
    """An OpenAI-style event: data only."""
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"
