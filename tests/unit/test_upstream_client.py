"""router/backends/http.py on real sockets: the retry rule, and the checks it adds to aiohttp's
connection reuse (which rely on a private hook of aiohttp's connector: pinned here)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from router.backends.base import BackendBroken
from router.backends.http import UpstreamClient, _Handler
from router.config import BackendConfig

Answer = Callable[[int, int, asyncio.StreamWriter], Awaitable[bool]]  # (connection, nth request) → keep open?


def reply(text: str) -> bytes:
    body = json.dumps({"type": "message", "content": [{"type": "text", "text": text}]}).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


async def serve(answer: Answer) -> tuple[asyncio.Server, list[tuple[int, int]]]:
    """A server that reads whole requests and lets `answer` decide; it notes (connection, nth)."""
    seen: list[tuple[int, int]] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        mine, nth = connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(v)
                    for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n"))
                    if k.lower() == b"content-length"
                )
                await reader.readexactly(length)
                nth += 1
                seen.append((mine, nth))
                if not await answer(mine, nth, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), seen


def client(server: asyncio.Server) -> UpstreamClient:
    port = server.sockets[0].getsockname()[1]
    return UpstreamClient("up", BackendConfig(kind="anthropic", url=f"http://127.0.0.1:{port}", api_key="k"))


async def text_of(up: UpstreamClient) -> str:
    _, content = await up.post("/v1/messages", b"{}", {})
    return json.loads(content)["content"][0]["text"]


async def test_connections_are_made_with_ccgates_protocol() -> None:
    """The reuse checks need aiohttp to build each connection with `_Handler` (a private hook)."""

    async def ok(connection: int, nth: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply("hi"))
        return True

    server, _ = await serve(ok)
    up = client(server)
    try:
        assert await text_of(up) == "hi"
        [[(protocol, _)]] = up.session.connector._conns.values()  # type: ignore[union-attr]
        assert isinstance(protocol, _Handler)
    finally:
        await up.aclose()
        server.close()


async def test_a_reused_connection_closed_before_any_answer_is_sent_again_once() -> None:
    async def closes_the_second(connection: int, nth: int, writer: asyncio.StreamWriter) -> bool:
        if nth == 2:  # as llama-server does after its 100th request, or its idle timeout
            return False
        writer.write(reply(f"from connection {connection}"))
        return True

    server, seen = await serve(closes_the_second)
    up = client(server)
    try:
        assert await text_of(up) == "from connection 1"
        assert await text_of(up) == "from connection 2"  # nothing came back on 1: sent again on a new one
        assert seen == [(1, 1), (1, 2), (2, 1)]
    finally:
        await up.aclose()
        server.close()


@pytest.mark.parametrize(
    ("fresh", "sent", "late"),
    [
        (True, b"", False),  # a fresh connection closed unanswered: the server may have run it
        (False, b"HTTP/1.1 200 OK\r\ncontent-le", False),  # reused, but half a head came back
        (False, b"HTTP/1.1 102 Processing\r\n\r\n", False),  # reused, but a 1xx came back
        (False, b"", True),  # reused, nothing back, but closed a while after (a proxy's idle timeout)
    ],
    ids=["fresh", "half-a-head", "a-1xx", "closed-late"],
)
async def test_never_sent_twice_but_for_the_keep_alive_race(
    fresh: bool, sent: bytes, late: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import router.backends.http as http

    if late:
        monkeypatch.setattr(http, "RACE_WINDOW", 0.0)  # any close is "a while" after the request went out
    breaking = 1 if fresh else 2  # the request on which the server breaks off

    async def breaks(connection: int, nth: int, writer: asyncio.StreamWriter) -> bool:
        if nth == breaking:
            writer.write(sent)
            await writer.drain()
            return False
        writer.write(reply("first"))
        return True

    server, seen = await serve(breaks)
    up = client(server)
    try:
        if not fresh:
            assert await text_of(up) == "first"
        with pytest.raises(BackendBroken, match="closed without an answer"):
            await text_of(up)
        assert seen == [(1, n) for n in range(1, breaking + 1)]  # on one connection, each once
    finally:
        await up.aclose()
        server.close()


async def test_a_connection_the_server_wrote_on_while_idle_is_not_reused() -> None:
    async def then_a_stray(connection: int, nth: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(f"for request {connection}.{nth}"))
        await writer.drain()
        writer.write(reply("for nobody"))  # after the answer, on its own
        await writer.drain()
        return True

    server, seen = await serve(then_a_stray)
    up = client(server)
    try:
        assert await text_of(up) == "for request 1.1"  # the stray is read with it, or waits in the socket
        assert await text_of(up) == "for request 2.1"
        assert seen == [(1, 1), (2, 1)]
    finally:
        await up.aclose()
        server.close()


async def test_a_reused_connection_reset_while_the_body_is_written_is_sent_again_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The keep-alive race seen from the writing side ("Can not write request body", seen against
    llama-server in a full run): the reset comes between the reuse check and the write, a window
    no test can hit on purpose, so the write itself fails here (the one fault injected: aiohttp's
    own handling of it is real). The server never gets the whole request: sent again, once."""
    import aiohttp.payload

    real = aiohttp.payload.BytesPayload.write_with_length
    calls = {"n": 0}

    async def write(self: aiohttp.payload.BytesPayload, writer: object, length: int | None) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second request's body, on the kept-alive connection
            raise ConnectionResetError(104, "Connection reset by peer")
        await real(self, writer, length)

    monkeypatch.setattr(aiohttp.payload.BytesPayload, "write_with_length", write)

    async def ok(connection: int, nth: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(f"from connection {connection}"))
        return True

    server, seen = await serve(ok)
    up = client(server)
    try:
        assert await text_of(up) == "from connection 1"
        assert await text_of(up) == "from connection 2"
        assert seen == [(1, 1), (2, 1)]  # the half-written one never reached the server whole
    finally:
        await up.aclose()
        server.close()


async def test_a_reused_connection_reset_after_the_whole_request_is_not_sent_again() -> None:
    """A reset once the server has the whole request (a proxy may have passed it on): the error,
    never a second copy."""
    import socket
    import struct

    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                seen.append(length)
                if len(seen) == 2:  # all of the 2nd request read: reset without a byte back
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                writer.write(reply("first"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    up = client(server)
    try:
        assert await text_of(up) == "first"
        with pytest.raises(BackendBroken):
            await text_of(up)
        assert len(seen) == 2  # the second request reached the server once
    finally:
        await up.aclose()
        server.close()
