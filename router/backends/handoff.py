"""The conversation crossing between local backends and the Anthropic API (see protocol/handoff):
what goes to the API is made acceptable to it, what comes from a local backend is marked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from router.backends.base import Incoming, Reply
from router.config import BackendConfig
from router.protocol.errors import BadUpstreamResponse, anthropic_error_event
from router.protocol.handoff import Handoff, Marks, for_anthropic
from router.protocol.marking import ReplyMarker, mark_message


def to_the_api(config: BackendConfig) -> bool:
    """Backends that hold a conversation to the Anthropic API's rules on thinking and tool ids."""
    return config.kind == "anthropic"


def from_a_local_model(config: BackendConfig) -> bool:
    return config.kind != "anthropic"


def for_the_api(incoming: Incoming, marks: Marks) -> tuple[Incoming, Handoff | None]:
    handoff = for_anthropic(incoming.body, incoming.raw, marks)
    if handoff is None:
        return incoming, None
    return replace(incoming, body=handoff.body, raw=handoff.raw), handoff


def mark_reply(reply: Reply, marks: Marks) -> None:
    """Sign the thinking and own the tool ids of a local backend's answer, whole or streamed."""
    if reply.rest is None:
        reply.body = mark_message(reply.body, marks)
        return
    marker = ReplyMarker(marks)
    reply.first = marker.feed(reply.first)
    reply.rest = _marked(reply.rest, marker)


async def _marked(chunks: AsyncIterator[bytes], marker: ReplyMarker) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            try:
                out = marker.feed(chunk)
            except BadUpstreamResponse as exc:
                yield b"\n\n" + anthropic_error_event(502, f"the backend's stream was cut off: {exc}")
                return
            if out:
                yield out
        tail = marker.finish()
        if tail:
            yield tail
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
