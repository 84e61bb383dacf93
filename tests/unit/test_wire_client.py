"""The request path's HTTP/1.1 client against real sockets: servers written byte by byte here, so
every framing an upstream may use (length, chunked, until close, gzip) and every way it may
misbehave (closing a kept-alive connection, a broken head, a head without end) is a real one."""

from __future__ import annotations

import asyncio
import base64
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from router.backends.http import describe
from router.backends.wire import MAX_HEAD, READ_HIGH_WATER, WireClient
from tests.harness.wait import wait_until_async

Handler = Callable[["Server", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()  # a connection of ours saw the client go

    async def __aenter__(self) -> Server:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(self, reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.listener = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.listener.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.listener.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return head


def fixed(status: bytes, headers: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\n" + headers + b"content-length: %d\r\n\r\n" % len(body) + body


async def read_all(response: AsyncIterator[bytes]) -> bytes:
    return b"".join([part async for part in response])


async def keep_alive(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await server.read_request(reader)
        writer.write(fixed(b"200 OK", b"content-type: application/json\r\n", b'{"ok":true}'))
        await writer.drain()


async def serving(handler: Handler) -> Server:
    return await Server(handler).__aenter__()


async def test_keeps_connections_alive_and_sends_one_well_formed_request() -> None:
    server = await serving(keep_alive)
    client = WireClient(server.url + "/prefix", 5)
    try:
        for _ in range(5):
            response = await client.request("POST", "/v1/messages?beta=true", b'{"a":1}', {"x-api-key": "k"})
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert await read_all(response.aiter_bytes()) == b'{"ok":true}'
            await response.aclose()
        assert server.connections == 1
        first = server.requests[0]
        assert first.startswith(b"POST /prefix/v1/messages?beta=true HTTP/1.1\r\n")
        assert b"\r\nhost: 127.0.0.1:" in first and b"\r\nx-api-key: k\r\n" in first
        assert b"\r\ncontent-length: 7\r\n\r\n" + b'{"a":1}' in first
    finally:
        await client.aclose()
        server.listener.close()


async def test_chunked_gzip_and_until_close_bodies_arrive_whole() -> None:
    text = b"data: " + b"x" * 5000 + b"\n\n"
    packed = gzip.compress(text)

    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await server.read_request(reader)
            if b"/chunked" in head:
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for piece in (text[:100], text[100:]):
                    writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            elif b"/gzip" in head:
                writer.write(fixed(b"200 OK", b"content-encoding: gzip\r\n", packed))
            else:  # no length, no chunks: the body ends with the connection
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n" + text)
                await writer.drain()
                return
            await writer.drain()

    server = await serving(handler)
    client = WireClient(server.url, 5)
    try:
        for path in ("/chunked", "/gzip", "/close"):
            response = await client.request("POST", path, b"", {})
            assert await read_all(response.aiter_bytes()) == text, path
            await response.aclose()
    finally:
        await client.aclose()
        server.listener.close()


async def test_a_kept_alive_connection_the_server_closed_is_not_reused() -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(fixed(b"200 OK", b"", b"one"))
        await writer.drain()
        # the server ends the connection after one answer, without saying connection: close

    server = await serving(handler)
    client = WireClient(server.url, 5)
    try:
        response = await client.request("POST", "/", b"", {})
        assert await read_all(response.aiter_bytes()) == b"one"
        await response.aclose()
        await wait_until_async(lambda: client._idle and client._idle[0].lost, "the server's close reached the client")
        response = await client.request("POST", "/", b"", {})
        assert await read_all(response.aiter_bytes()) == b"one"
        await response.aclose()
        assert server.connections == 2
    finally:
        await client.aclose()
        server.listener.close()


async def test_a_reused_connection_closed_under_the_request_says_so_and_the_next_one_is_new() -> None:
    """The race a pool cannot see coming: the server takes the request on a kept-alive
    connection and closes it without an answer (UpstreamClient sends it again on that error)."""

    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(fixed(b"200 OK", b"", b"one"))
        await writer.drain()
        await server.read_request(reader)  # the second request on this connection: no answer

    server = await serving(handler)
    client = WireClient(server.url, 5)
    try:
        response = await client.request("POST", "/", b"", {})
        await read_all(response.aiter_bytes())
        await response.aclose()
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.request("POST", "/", b"", {})
        response = await client.request("POST", "/", b"", {})
        assert await read_all(response.aiter_bytes()) == b"one"
        await response.aclose()
        assert server.connections == 2
    finally:
        await client.aclose()
        server.listener.close()


@pytest.mark.parametrize(
    ("answer", "kind", "words"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n", httpx.RemoteProtocolError, "malformed"),
        (b"NOT HTTP AT ALL\r\n\r\n", httpx.RemoteProtocolError, "malformed"),
        (b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (MAX_HEAD + 10), httpx.RemoteProtocolError, "head larger"),
        (b"", httpx.RemoteProtocolError, "without sending a response"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort", httpx.ReadError, "mid-answer"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", httpx.RemoteProtocolError, "malformed"),
    ],
)
async def test_a_broken_answer_is_an_httpx_error_that_says_what_broke(
    answer: bytes, kind: type[Exception], words: str
) -> None:
    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(answer)
        await writer.drain()

    server = await serving(handler)
    client = WireClient(server.url, 5)
    try:
        with pytest.raises(kind) as caught:
            response = await client.request("POST", "/", b"", {})
            try:
                await read_all(response.aiter_bytes())
            finally:
                await response.aclose()
        assert words in str(caught.value)
        assert not client._idle  # a connection that broke is never reused
    finally:
        await client.aclose()
        server.listener.close()


async def test_refused_and_unresolvable_connections_are_connect_errors() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    client = WireClient(f"http://127.0.0.1:{port}", 5)
    with pytest.raises(httpx.ConnectError) as caught:
        await client.request("POST", "/", b"", {})
    assert describe(caught.value) == "connection refused"
    with pytest.raises(httpx.ConnectError):
        await WireClient("http://no-such-host.invalid", 5).request("POST", "/", b"", {})


async def test_closing_an_unfinished_answer_closes_its_connection_at_once() -> None:
    """How llama-server learns the client left: the connection it streams on goes away."""

    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # returns when the client closes
        server.closed.set()

    server = await serving(handler)
    client = WireClient(server.url, 5)
    try:
        response = await client.request("POST", "/", b"", {})
        chunks = response.aiter_bytes()
        assert await anext(chunks) == b"hello"
        await response.aclose()
        async with asyncio.timeout(10):
            await server.closed.wait()
        assert not client._idle
    finally:
        await client.aclose()
        server.listener.close()


async def test_a_reader_slower_than_the_server_pauses_the_socket_and_loses_nothing() -> None:
    piece = b"y" * 65536
    count = 4 * READ_HIGH_WATER // len(piece)

    async def handler(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(piece) * count))
        for _ in range(count):
            writer.write(piece)
            await writer.drain()

    server = await serving(handler)
    client = WireClient(server.url, 5)
    try:
        response = await client.request("POST", "/", b"", {})
        connection = response._connection
        assert connection is not None and connection.transport is not None
        # nobody reads yet: the client stops reading the socket once it holds its limit
        await wait_until_async(lambda: not connection.transport.is_reading(), "reading from the socket paused")
        assert READ_HIGH_WATER < response._buffered <= READ_HIGH_WATER + 4 * len(piece)
        received = 0
        async for part in response.aiter_bytes():
            received += len(part)
        assert received == len(piece) * count
        await response.aclose()
    finally:
        await client.aclose()
        server.listener.close()


async def test_credentials_in_the_url_are_basic_auth_and_bad_header_values_are_refused() -> None:
    server = await serving(keep_alive)
    host = server.url.removeprefix("http://")
    client = WireClient(f"http://user:p%40ss@{host}", 5)
    try:
        response = await client.request("POST", "/", b"", {})
        await response.aclose()
        assert b"authorization: Basic " + base64.b64encode(b"user:p@ss") in server.requests[0]
        with pytest.raises(httpx.LocalProtocolError):
            await client.request("POST", "/", b"", {"x-evil": "a\r\nx-injected: 1"})
        assert len(server.requests) == 1
        response = await client.request("POST", "/", b"", {})  # the pool is not leaked by a refusal
        await response.aclose()
    finally:
        await client.aclose()
        server.listener.close()


async def test_a_full_pool_waits_for_a_connection_to_come_back() -> None:
    server = await serving(keep_alive)
    client = WireClient(server.url, 5, max_connections=2)
    try:
        held = [await client.request("POST", "/", b"", {}) for _ in range(2)]
        third = asyncio.ensure_future(client.request("POST", "/", b"", {}))
        other = WireClient(server.url, 5)  # a whole round trip elsewhere: the loop ran the third meanwhile
        await (await other.request("POST", "/", b"", {})).aclose()
        await other.aclose()
        assert not third.done() and server.connections == 3  # two held, the other client's: none for it
        await read_all(held[0].aiter_bytes())
        await held[0].aclose()
        response = await asyncio.wait_for(third, 10)
        assert response.status_code == 200
        await response.aclose()
        await held[1].aclose()
        assert server.connections == 3  # the third went on the first one, given back
    finally:
        await client.aclose()
        server.listener.close()
