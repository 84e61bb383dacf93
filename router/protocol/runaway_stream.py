"""The runaway guard on an Anthropic event stream (pure): text and thinking are watched as they
pass (protocol/runaway); an answer that repeats itself, or writes another family's end-of-turn
markup, is ended cleanly right there, in the same dialect.

`feed` returns the events for the client; when the answer must stop it raises `StopAnswer`
carrying the events that end it (the open blocks closed, a `message_delta` with its stop
reason, `message_stop`), and the caller closes the upstream request, which frees the slot.
"""

from __future__ import annotations

import math
from typing import Any

from router.protocol.estimate import BYTES_PER_TOKEN
from router.protocol.runaway import RepetitionWatch, leaked_end, partial_end
from router.protocol.sse import SSEDecoder, encode_event, object_of, raw_event
from router.protocol.usage import relayed_in

REPETITION, MARKUP = "repetition", "markup"


class StopAnswer(Exception):
    """The answer ends here. `kind`: repetition (the model looped: a failure of the backend
    while nothing has gone out) or markup (its turn ended, the rest was noise: not a failure)."""

    def __init__(self, kind: str, detail: str, events: list[bytes]) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.events = events


class RunawayGuard:
    def __init__(self, watch: RepetitionWatch | None = None) -> None:
        self.watch = watch or RepetitionWatch()
        self.stopped: str | None = None  # the kind, once it stopped an answer
        self.estimated = False  # the output count it wrote is its own estimate (the upstream's never came)
        self._decoder = SSEDecoder()
        self._open: dict[int, str] = {}  # open blocks: index → type
        self._held: dict[int, str] = {}  # text held back per block: maybe the start of a marker
        self._next = 0  # the next free block index
        self._usage: dict[str, Any] = {}
        self._written = 0  # characters of content that went by: the output count when none came

    def feed(self, chunk: bytes) -> list[bytes]:
        out: list[bytes] = []
        for event in self._decoder.feed(chunk):
            self._event(event.event or "", event.data, out)
        return out

    def finish(self) -> list[bytes]:
        out: list[bytes] = []
        for event in self._decoder.flush():
            self._event(event.event or "", event.data, out)
        return out

    def _event(self, name: str, data: str, out: list[bytes]) -> None:
        if name == "content_block_delta" and ('"text_delta"' in data or '"thinking_delta"' in data):
            self._delta(object_of(data), data, out)
            return
        if name == "content_block_delta":  # a tool call's input: not watched, but counted
            self._written += relayed_in(object_of(data).get("delta"))
        if name == "content_block_start":
            payload = object_of(data)
            index = payload.get("index", 0)
            self._open[index] = str((payload.get("content_block") or {}).get("type", ""))
            self._next = max(self._next, index + 1)
        elif name == "content_block_stop":
            index = object_of(data).get("index", 0)
            self._release_held(index, out)
            self._open.pop(index, None)
        elif name == "message_delta":
            usage = object_of(data).get("usage")
            if isinstance(usage, dict):
                self._usage = usage
        out.append(raw_event(name, data))

    def _delta(self, payload: dict[str, Any], data: str, out: list[bytes]) -> None:
        index = payload.get("index", 0)
        delta = payload.get("delta") or {}
        field = "text" if delta.get("type") == "text_delta" else "thinking"
        received = str(delta.get(field) or "")
        self._written += len(received)
        held = self._held.pop(index, "")
        text = held + received
        cut = leaked_end(text)
        if cut is not None:
            self._emit(index, field, text[:cut], out)
            self._stop(MARKUP, "the model wrote another family's end-of-turn markup", out)
        keep = partial_end(text)
        if keep:
            self._held[index] = text[-keep:]
            text = text[:-keep]
        if text == received:
            out.append(raw_event("content_block_delta", data))  # unchanged: relayed as it came
        else:
            self._emit(index, field, text, out)
        repeated = self.watch.add(text)
        if repeated is not None:
            said = (
                f"\n\n[ccgate stopped this answer: the model repeated itself ({repeated.describe()}), "
                "and would have gone on until max_tokens.]"
            )
            if field == "text":
                self._emit(index, field, said, out)
            else:  # the explanation goes where the user reads it: a text block of its own
                self._close(index, out)
                self._text_block(said, out)
            self._stop(REPETITION, repeated.describe(), out)

    def _emit(self, index: int, field: str, text: str, out: list[bytes]) -> None:
        if text:
            delta = {"type": f"{field}_delta", field: text}
            payload = {"type": "content_block_delta", "index": index, "delta": delta}
            out.append(encode_event("content_block_delta", payload))

    def _release_held(self, index: int, out: list[bytes]) -> None:
        held = self._held.pop(index, "")
        if held:
            self._emit(index, "text" if self._open.get(index) == "text" else "thinking", held, out)

    def _close(self, index: int, out: list[bytes]) -> None:
        if self._open.pop(index, None) is not None:
            out.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": index}))

    def _text_block(self, text: str, out: list[bytes]) -> None:
        index = self._next
        self._next += 1
        start = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
        out.append(encode_event("content_block_start", start))
        self._emit(index, "text", text, out)
        out.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": index}))

    def _stop(self, kind: str, detail: str, out: list[bytes]) -> None:
        for index in list(self._open):
            self._close(index, out)
        self._held.clear()
        self.stopped = kind
        # the API's message_delta always says the output count: the upstream's final one never came,
        # so what was written so far, estimated from its size
        written = math.ceil(self._written / BYTES_PER_TOKEN)
        said = _count(self._usage.get("output_tokens"))
        self.estimated = written > said
        usage = {**self._usage, "output_tokens": max(said, written)}
        delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": usage}
        out.append(encode_event("message_delta", delta))
        out.append(encode_event("message_stop", {"type": "message_stop"}))
        raise StopAnswer(kind, detail, out)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
