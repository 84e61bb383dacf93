"""Putting the tool-call guard (protocol/tool_guard) and the runaway guard (protocol/runaway_stream)
in front of a backend's answers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import msgspec

from router.backends.base import BackendToolCallError, Incoming
from router.config import BackendConfig
from router.protocol.runaway_stream import RunawayGuard
from router.protocol.tool_check import ToolBox, ToolCallError
from router.protocol.tool_guard import ToolCallGuard, guard_message

Transform = Callable[[bytes], Iterable[bytes]]
Finish = Callable[[], Iterable[bytes]]


class Stage(Protocol):
    """Anthropic event stream in, the same stream (checked, changed) out."""

    def feed(self, chunk: bytes) -> list[bytes]: ...

    def finish(self) -> list[bytes]: ...


def guard_for(config: BackendConfig, incoming: Incoming) -> ToolCallGuard | None:
    """A guard when the backend is guarded and the request offers tools (no tools, no calls)."""
    tools = incoming.raw.get("tools")
    if not config.guards_tools or not tools or not isinstance(tools, list):
        return None
    return ToolCallGuard(ToolBox(t for t in tools if isinstance(t, dict)))


def runaway_for(config: BackendConfig) -> RunawayGuard | None:
    return RunawayGuard() if config.guards_runaways else None


def guarded(
    guard: Stage | None, transform: Transform | None = None, finish: Finish | None = None
) -> tuple[Transform | None, Finish | None]:
    """`transform` and `finish` with the stage after them (unchanged without one)."""
    if guard is None:
        return transform, finish

    def guarded_transform(chunk: bytes) -> list[bytes]:
        return guard.feed(b"".join(transform(chunk)) if transform else chunk)

    def guarded_finish() -> list[bytes]:
        tail = guard.feed(b"".join(finish())) if finish else []
        return tail + guard.finish()

    return guarded_transform, guarded_finish


def guard_body(name: str, guard: ToolCallGuard | None, body: bytes) -> bytes:
    """A whole Anthropic message with its tool calls checked; BackendToolCallError when one fails."""
    if guard is None:
        return body
    try:
        message = msgspec.json.decode(body)
        if not isinstance(message, dict) or message.get("type") != "message":
            return body
        return msgspec.json.encode(guard_message(message, guard.tools, guard.outcomes))
    except ToolCallError as exc:
        raise BackendToolCallError(name, exc.kind, exc.message) from None
    except msgspec.DecodeError:
        return body
