"""A small HTTP/1.1 client for the request path: keep-alive connections to one backend, a request
written in one piece, the answer parsed by httptools (the C parser uvicorn serves with).

httpx (with httpcore, anyio and h11) spent ~0.8 ms of CPU on each proxied request here, the
largest part of what ccgate added (bench/upstream_client.py measures both on the same upstream);
this spends ~0.04 ms. httpx stays for everything off the request path: health probes, model
lists, the doctor. Failures are raised as httpx's own exceptions (ConnectError, ReadError,
RemoteProtocolError, ...), so callers keep one family to catch and describe.

What it does not do, because no backend needs it: HTTP/2, proxies, redirects, cookies, request
bodies that are not bytes. The caller bounds every wait with asyncio.timeout; a response that is
closed before its end (a timeout, a client that left) closes its connection, which is how
llama-server learns to free the slot.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import httptools
import httpx

MAX_HEAD = 64 * 1024  # bytes of status line and headers an upstream may send (h11's limit was 16 KiB)
READ_HIGH_WATER = 1024 * 1024  # buffered body bytes at which reading from the socket pauses
KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)
WRITE_BUFFER_HIGH = 1024 * 1024  # a request body is handed to the kernel without waiting below this


class Origin:
    """Where a backend lives: scheme, host, port, and the TLS context for https."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {parts.scheme!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.tls else 80)
        default = 443 if self.tls else 80
        name = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = name if self.port == default else f"{name}:{self.port}"
        self.path = parts.path.rstrip("/")  # a prefix the backend is mounted under
        self.ssl: ssl.SSLContext | None = _tls_context() if self.tls else None
        # user:password in the URL is HTTP basic auth, as httpx sent it
        self.basic_auth: str | None = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self.basic_auth = "Basic " + base64.b64encode(pair).decode()


def _tls_context() -> ssl.SSLContext:
    try:
        import certifi  # httpx's own trust store, so https backends trust what they trusted before

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; answers one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.idle_since = 0.0
        self._head = 0
        self._response: WireResponse | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused_writing = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] - a stream transport (uvloop's is not a subclass)
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:  # bytes nobody asked for: the connection cannot be trusted again
            self.lost = True
            self._close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed response: {exc}"))
            return
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("the server switched protocols"))
            return
        if not response.head_done:  # a head without end (one read past the limit at most)
            self._head += len(data)
            if self._head > MAX_HEAD:
                self._fail(httpx.RemoteProtocolError(f"response head larger than {MAX_HEAD} bytes"))

    def eof_received(self) -> bool | None:
        self.lost = True
        return None  # close the transport: connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(httpx.WriteError("connection closed while sending the request"))
        response = self._response
        if response is not None and not response.complete:
            if response.head_done and response.until_close:
                response.finish()  # a body without length ends when the connection does
            elif response.head_done:
                response.fail(httpx.ReadError("the server closed the connection mid-answer"))
            else:
                response.fail(httpx.RemoteProtocolError("server disconnected without sending a response"))

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._response.add_header(name, value)

    def on_headers_complete(self) -> None:
        response = self._response
        assert response is not None
        response.status_code = self.parser.get_status_code()
        response.keep_alive = self.parser.should_keep_alive()
        response.headers_done()

    def on_body(self, body: bytes) -> None:
        assert self._response is not None
        self._response.feed(body)

    def on_message_complete(self) -> None:
        assert self._response is not None
        self._response.finish()

    def on_status(self, status: bytes) -> None:
        assert self._response is not None
        self._response.reason_phrase = status.decode("latin-1")

    # used by WireResponse and the pool
    async def send(self, request: bytes, response: WireResponse) -> None:
        assert self.transport is not None
        if self.lost or self.transport.is_closing():
            raise httpx.RemoteProtocolError("server disconnected without sending a response")
        self._response = response
        self._head = 0
        self.transport.write(request)
        if self._paused_writing:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await self._drained
            finally:
                self._drained = None

    def pause_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def released(self) -> None:
        self._response = None
        self.parser = httptools.HttpResponseParser(self)

    def _fail(self, exc: Exception) -> None:
        if self._response is not None:
            self._response.fail(exc)
        self._close()

    def _close(self) -> None:
        self.lost = True
        self.abort()

    def abort(self) -> None:
        """Close at once, unsent bytes and all: a stalled server must not keep it open."""
        if self.transport is not None:
            self.transport.abort()


class WireResponse:
    """A response whose body is read as it arrives: `aiter_bytes()` once, then `aclose()`."""

    def __init__(self, pool: WireClient, connection: _Connection) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self.status_code = 0
        self.reason_phrase = ""
        self.headers: dict[str, str] = {}
        self.extensions: dict[str, Any] = {}
        self.keep_alive = False
        self.head_done = False
        self.complete = False
        self.until_close = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._decoder: Any = None
        self._closed = False

    # fed by the connection
    def add_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def headers_done(self) -> None:
        self.head_done = True
        framed = "content-length" in self.headers or "chunked" in self.headers.get("transfer-encoding", "")
        self.until_close = not framed and self.status_code not in (204, 304) and self.status_code >= 200
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        self._wake()

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > READ_HIGH_WATER and self._connection is not None:
            self._connection.pause_reading()
        self._wake()

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, exc: Exception) -> None:
        if self._error is None and not self.complete:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # read by the caller
    async def head(self) -> None:
        while not self.head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks.clear()
                if self._buffered > READ_HIGH_WATER and self._connection is not None:
                    self._connection.resume_reading()
                self._buffered = 0
                if self._decoder is not None:
                    try:
                        data = self._decoder.decompress(data)
                    except zlib.error as exc:
                        raise httpx.DecodingError(f"undecodable response body: {exc}") from None
                if data:
                    yield data
                continue
            if self.complete:
                if self._decoder is not None and (tail := self._decoder.flush()):
                    yield tail
                return
            if self._error is not None:
                raise self._error
            await self._wait()

    async def aread(self) -> bytes:
        return b"".join([part async for part in self.aiter_bytes()])

    async def aclose(self) -> None:
        """Give the connection back when the answer was read to its end, else close it."""
        if self._closed:
            return
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            reusable = self.complete and self.keep_alive and self._error is None and not connection.lost
            self._pool.release(connection, reusable)


class WireClient:
    """Keep-alive connections to one origin, at most `max_connections` at once."""

    def __init__(self, url: str, connect_timeout: float, max_connections: int = 256, max_keepalive: int = 32) -> None:
        self.origin = Origin(url)
        self.connect_timeout = connect_timeout
        self.max_keepalive = max_keepalive
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def request(self, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> WireResponse:
        """Send a request and read its head. A kept-alive connection the server closed just then
        fails with RemoteProtocolError (the caller may send it again: a new connection is made)."""
        request = self._encode(method, target, body, headers)
        await self._slots.acquire()
        connection: _Connection | None = None
        try:
            connection = await self._connection()
            response = WireResponse(self, connection)
            try:
                await connection.send(request, response)
                await response.head()
            except BaseException:
                await response.aclose()
                raise
            return response
        except BaseException:
            if connection is None:
                self._slots.release()
            raise

    def release(self, connection: _Connection, reusable: bool) -> None:
        self._slots.release()
        connection.released()
        if reusable and not self._closed and len(self._idle) < self.max_keepalive:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.abort()

    async def aclose(self) -> None:
        self._closed = True
        for connection in self._idle:
            connection.abort()
        self._idle.clear()

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost and now - connection.idle_since < KEEPALIVE_EXPIRY:
                return connection
            connection.abort()
        origin = self.origin
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    _Connection,
                    origin.host,
                    origin.port,
                    ssl=origin.ssl,
                    server_hostname=origin.host if origin.ssl else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("connect timed out") from None
        except ssl.SSLError as exc:
            raise httpx.ConnectError(f"TLS handshake failed: {exc.reason or exc}") from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return connection

    def _encode(self, method: str, target: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [f"{method} {self.origin.path}{target} HTTP/1.1", f"host: {self.origin.authority}"]
        if self.origin.basic_auth and not any(n.lower() == "authorization" for n in headers):
            lines.append(f"authorization: {self.origin.basic_auth}")
        for name, value in headers.items():
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                continue
            if "\r" in value or "\n" in value or "\0" in value or "\r" in name or "\n" in name or ":" in name:
                raise httpx.LocalProtocolError(f"illegal header {name!r}")
            lines.append(f"{name}: {value}")
        lines.append(f"content-length: {len(body)}")
        try:
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        except UnicodeEncodeError:
            raise httpx.LocalProtocolError("a header value is not latin-1") from None
        return head + body
