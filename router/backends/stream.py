"""Turning an open upstream stream into a Reply whose remaining chunks end cleanly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable

import httpx

from router.backends.base import BackendProtocolError, Reply
from router.backends.http import UpstreamClient
from router.protocol.errors import anthropic_error_event

SSE = "text/event-stream"
log = logging.getLogger("ccgate.stream")


def streaming_reply(
    client: UpstreamClient,
    response: httpx.Response,
    first: bytes,
    transform: Callable[[bytes], Iterable[bytes]] | None = None,
    finish: Callable[[], Iterable[bytes]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A Reply that relays the upstream's chunks (through `transform` when the dialect differs).

    A failure after the first byte cannot move to another backend any more: it ends the stream
    with an Anthropic `event: error`, and the upstream response is always closed, so a client
    that hangs up frees the llama.cpp slot at once.
    """

    async def rest() -> AsyncIterator[bytes]:
        try:
            async for chunk in client.rest(response):
                if transform is None:
                    yield chunk
                else:
                    for out in transform(chunk):
                        yield out
            for out in finish() if finish else ():
                yield out
        except TimeoutError:
            yield anthropic_error_event(504, f"backend {client.name} stalled mid-stream", "timeout_error")
        except httpx.HTTPError as exc:
            yield anthropic_error_event(502, f"backend {client.name} broke off the stream: {type(exc).__name__}")
        except BackendProtocolError as exc:
            yield anthropic_error_event(502, str(exc))
        except Exception:
            log.exception("relaying the stream of backend %s failed", client.name)
            yield anthropic_error_event(500, f"gateway error while relaying backend {client.name}")
        finally:
            await response.aclose()

    return Reply(status=200, content_type=SSE, first=first, rest=rest(), headers=headers or {}, close=response.aclose)
