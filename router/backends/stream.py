"""Turning an open upstream stream into a Reply whose remaining chunks end cleanly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable

import msgspec

from router.backends.base import (
    BackendBroken,
    BackendError,
    BackendProtocolError,
    BackendRunaway,
    BackendTimeout,
    BackendToolCallError,
    Reply,
)
from router.backends.http import TotalTimeout, TransportError, UpstreamClient, UpstreamResponse, describe
from router.protocol.aggregate import MessageAggregator
from router.protocol.errors import BadUpstreamResponse, anthropic_error_event
from router.protocol.redact import safe_text
from router.protocol.runaway_stream import REPETITION, StopAnswer
from router.protocol.sse import Event, SSEDecoder
from router.protocol.tool_check import ToolCallError

SSE = "text/event-stream"
log = logging.getLogger("ccgate.stream")


async def streaming_reply(
    client: UpstreamClient,
    response: UpstreamResponse,
    first: bytes,
    transform: Callable[[bytes], Iterable[bytes]] | None = None,
    finish: Callable[[], Iterable[bytes]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """A Reply that relays the upstream's chunks (through `transform` when they must change).

    Upstream chunks are read until the transform gives something for the client (a tool-call
    guard holds everything back until the first content): up to then every failure is still a
    BackendError, and the request can move to another backend. A failure after that ends the
    stream with an Anthropic `event: error`, and the upstream response is always closed, so a
    client that hangs up frees the llama.cpp slot at once.
    """
    chunks = client.rest(response)
    ended = False
    try:
        out = b"".join(transform(first)) if transform else first
        while not out and not ended:
            chunk = await anext(chunks, None)
            if chunk is None:
                ended = True
                out = b"".join(finish()) if finish else b""
            else:
                out = b"".join(transform(chunk)) if transform else chunk
    except StopAnswer as stop:  # its turn ended in markup: the answer is whole, the rest is noise
        await response.aclose()
        _stopped(client, stop)
        if stop.kind == REPETITION:  # nothing went out yet: another target may do better
            stopped = Reply(200, SSE, first=b"".join(stop.events), rest=_nothing(), headers=headers or {})
            raise BackendRunaway(client.name, f"stopped a runaway answer: {stop.detail}", stopped) from None
        out, ended = b"".join(stop.events), True
    except BaseException as exc:
        await response.aclose()
        _raise_before_output(client, exc)
        raise

    async def rest() -> AsyncIterator[bytes]:
        try:
            if ended:
                return
            async for chunk in chunks:
                if transform is None:
                    yield chunk
                else:
                    for piece in transform(chunk):
                        yield piece
            for piece in finish() if finish else ():
                yield piece
        except StopAnswer as stop:
            _stopped(client, stop)
            yield b"".join(stop.events)
        except TotalTimeout:
            limit = client.config.timeouts.total
            yield anthropic_error_event(504, f"backend {client.name} did not finish within {limit:g}s", "timeout_error")
        except TimeoutError:
            yield anthropic_error_event(504, f"backend {client.name} stalled mid-stream", "timeout_error")
        except TransportError as exc:
            yield anthropic_error_event(502, f"backend {client.name} broke off the stream: {type(exc).__name__}")
        except BackendProtocolError as exc:
            yield anthropic_error_event(502, safe_text(str(exc), [client.config.api_key]))
        except BadUpstreamResponse as exc:
            said = safe_text(str(exc), [client.config.api_key])
            yield anthropic_error_event(502, f"backend {client.name} sent an unusable stream: {said}")
        except ToolCallError as exc:
            log.warning("backend %s: unusable tool call after output began: %s", client.name, exc.message)
            yield anthropic_error_event(502, f"backend {client.name} returned an unusable tool call: {exc.message}")
        except Exception as exc:
            log.exception("relaying the stream of backend %s failed", client.name)
            yield anthropic_error_event(
                502, f"backend {client.name} sent a stream ccgate could not relay ({_kind(exc)})"
            )
        finally:
            await response.aclose()

    return Reply(status=200, content_type=SSE, first=out, rest=rest(), headers=headers or {}, close=response.aclose)


async def _nothing() -> AsyncIterator[bytes]:
    """The rest of a stream that is whole already."""
    return
    yield b""


def _stopped(client: UpstreamClient, stop: StopAnswer) -> None:
    log.warning("backend %s: stopped a runaway answer (%s): %s", client.name, stop.kind, stop.detail)


def _raise_before_output(client: UpstreamClient, exc: BaseException) -> None:
    """Turn a failure before anything reached the client into the BackendError dispatch acts on."""
    if isinstance(exc, TotalTimeout):
        raise BackendTimeout(client.name, f"did not finish within {client.config.timeouts.total:g}s") from None
    if isinstance(exc, TimeoutError):
        raise BackendTimeout(client.name, f"stalled for {client.config.timeouts.idle:g}s mid-answer") from None
    if isinstance(exc, TransportError):
        raise BackendBroken(client.name, f"broke off mid-answer: {describe(exc)}") from None
    if isinstance(exc, BadUpstreamResponse):
        raise BackendProtocolError(client.name, str(exc)) from None
    if isinstance(exc, ToolCallError):
        raise BackendToolCallError(client.name, exc.kind, exc.message) from None
    if isinstance(exc, BackendError):
        return
    if isinstance(exc, Exception):
        # Anything else an answer made the parsing raise (a field of the wrong type, ...) is the
        # upstream's oddity: a failure of this backend, so the next one is tried. Logged whole,
        # in case it is ccgate's own bug.
        log.warning("backend %s: unusable answer", client.name, exc_info=exc)
        raise BackendProtocolError(client.name, f"unusable answer ({_kind(exc)})") from None


def _kind(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {safe_text(str(exc), limit=120)}" if str(exc) else type(exc).__name__


FIRST_EVENT_LIMIT = 1024 * 1024  # bytes an upstream may send before its first whole event


async def first_event(client: UpstreamClient, response: UpstreamResponse, first: bytes) -> tuple[bytes, Event]:
    """Read on until the stream's first whole event is in hand, and return what was read with it.

    Nothing has reached the client yet, so an upstream that sends no event (an endless line,
    a page of HTML, nothing at all) is still a backend failure the next target can make up for.
    """
    decoder = SSEDecoder(max_line=FIRST_EVENT_LIMIT, max_event=FIRST_EVENT_LIMIT)
    read = [first]
    try:
        events = decoder.feed(first)
        while not events:
            chunk = await client.next_chunk(response)
            if chunk is None:
                events = decoder.flush()
                if not events:
                    raise BadUpstreamResponse("the stream ended before its first event")
                break
            read.append(chunk)
            events = decoder.feed(chunk)
    except BaseException as exc:
        await response.aclose()
        _raise_before_output(client, exc)
        raise
    return b"".join(read), events[0]


async def collect(
    client: UpstreamClient,
    response: UpstreamResponse,
    first: bytes,
    transform: Callable[[bytes], Iterable[bytes]] | None = None,
    finish: Callable[[], Iterable[bytes]] | None = None,
) -> bytes:
    """Read a whole Anthropic event stream and return the equivalent non-streamed message.

    Non-streaming requests to llama-server are streamed upstream and collected here: llama-server
    notices a vanished streaming client at its next chunk, but a non-streaming one only after a
    full second with no other result in its queue, which a busy server may never have.
    Nothing has reached the client yet, so every failure is still a BackendError.
    """
    decoder = SSEDecoder()
    aggregator = MessageAggregator()

    def take(chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            for event in decoder.feed(chunk):
                aggregator.feed(event)

    try:
        try:
            take(transform(first) if transform else (first,))
            async for chunk in client.rest(response):
                take(transform(chunk) if transform else (chunk,))
            take(finish() if finish else ())
        except StopAnswer as stop:
            _stopped(client, stop)
            take(stop.events)
            if stop.kind == REPETITION:  # nothing went out yet: the next target may do better
                for event in decoder.flush():
                    aggregator.feed(event)
                stopped = Reply(200, "application/json", body=msgspec.json.encode(aggregator.message()))
                raise BackendRunaway(client.name, f"stopped a runaway answer: {stop.detail}", stopped) from None
        for event in decoder.flush():
            aggregator.feed(event)
        return msgspec.json.encode(aggregator.message())
    except BaseException as exc:
        _raise_before_output(client, exc)
        raise
    finally:
        await response.aclose()
