"""What every translator of an Anthropic answer stream into another dialect keeps (pure)."""

from __future__ import annotations

from typing import Any

from router.protocol.sse import Event, object_of


class AnswerEvents:
    """The answering model, its usage and stop reason, read off message_start / message_delta;
    `done` once the translated stream is closed."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.done = False
        self.usage: dict[str, Any] = {}
        self.stop: str | None = None

    def read(self, event: Event) -> tuple[str | None, dict[str, Any]] | None:
        """(event kind, data), or None once the stream is done."""
        if self.done:
            return None
        data = object_of(event.data)
        kind = event.event or data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            self.model = message.get("model") or self.model
            self.usage.update(message.get("usage") or {})
        elif kind == "message_delta":
            self.stop = (data.get("delta") or {}).get("stop_reason") or self.stop
            self.usage.update(data.get("usage") or {})
        return kind, data
