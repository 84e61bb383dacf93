"""One aiohttp session per backend, with the timeouts a model server needs.

Everything ccgate sends upstream goes through here: requests, health probes, model lists, the
doctor. aiohttp brings the HTTP/1.1 state machine (1xx answers skipped, keep-alive only after a
whole, well-framed answer, bounded decompression, backpressure) and egress/TLS settings
(router/backends/egress.py). A model server has two very different waits, the first byte
(prompt processing: minutes for a cold 20k-token prompt on a CPU) and the gap between two
chunks; both are enforced here with `asyncio.timeout`, and every transport failure becomes the
BackendError that dispatch decides on.

A request is sent twice only when the connection it went out on was a kept-alive one that the
server closed at once (within RACE_WINDOW), before sending a single byte back (llama-server
closes a connection after 100 requests or 5 idle seconds, and may do so just as it is reused):
then nothing was processed. Any byte of an answer (a 1xx too), a close after a while, a fresh
connection, a reset or a timeout: never again.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import socket
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import msgspec
from aiohttp.client_proto import ResponseHandler
from yarl import URL

from router.backends.base import (
    BackendBroken,
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    Probe,
)
from router.backends.egress import Egress, egress_for
from router.config import BackendConfig
from router.protocol.errors import upstream_error_message, upstream_error_type, upstream_n_ctx
from router.protocol.redact import safe_text

MAX_ERROR_BODY = 64 * 1024
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a whole (non-streamed) answer; no model answer comes near it
MAX_FETCH_BYTES = 16 * 1024 * 1024  # a probe's or the doctor's answer (/slots, /metrics, a reply)
# What ccgate decodes; it asks for identity, but a server may compress anyway.
DECODED_ENCODINGS = frozenset({"identity", "gzip", "deflate"})
# Seconds an idle connection is kept: below llama-server's own 5 s keep-alive, so ccgate lets go
# of a connection before the server does; the cloud keeps them longer.
KEEPALIVE = {"llamacpp": 4.0}
KEEPALIVE_DEFAULT = 30.0

TransportError = aiohttp.ClientError  # what a broken connection raises while a body is read
# A kept-alive connection the server closed just as it was reused: its FIN was on the way. Any
# later close (a proxy's idle timeout during a long generation) may have been processed.
RACE_WINDOW = 1.0  # seconds


@dataclass(slots=True)
class _Attempt:
    """What the connector noted of one request's connection (for the retry rule)."""

    reused: bool = False
    protocol: Any = None
    sent: float = 0.0

    def may_send_again(self) -> bool:
        """A reused connection, nothing at all came back on it, and it closed at once."""
        return (
            self.reused
            and self.protocol is not None
            and not getattr(self.protocol, "answered", True)
            and time.monotonic() - self.sent < RACE_WINDOW
        )


_attempt: contextvars.ContextVar[_Attempt] = contextvars.ContextVar("ccgate_attempt")


class TotalTimeout(TimeoutError):
    """The answer went on past `timeouts.total`."""


class _Handler(ResponseHandler):
    """aiohttp's protocol, noting bytes that arrive while no request is out on the connection,
    and whether any came back for the request that is."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.expecting = False  # a request is out and its answer not yet whole
        self.answered = False  # some byte came back for it (a 1xx counts)
        self.stray = False  # bytes came that no request asked for
        self._before: object = None  # the previous answer's body, until this request's arrives

    def set_response_params(self, **kwargs: Any) -> None:  # aiohttp calls it as each request goes out
        self.expecting = True
        self.answered = False
        self._before = self._payload
        super().set_response_params(**kwargs)

    def data_received(self, data: bytes) -> None:
        if data:
            if self.expecting:
                self.answered = True
            else:
                self.stray = True
        super().data_received(data)
        payload = self._payload
        if payload is not None and payload is not self._before and payload.is_eof():
            self.expecting = False


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, with two checks on every connection it hands out.

    A kept-alive connection on which the server wrote anything while it sat idle (an unsolicited
    response, or the tail of one that said it was shorter) is closed, not reused: aiohttp 3.14
    takes such bytes for the next request's answer, so one caller would get a response meant for
    nobody, or for someone else (tests/integration/test_upstream_conformance.py). Bytes the server
    sends only after the next request went out cannot be told from its answer by any HTTP/1.1
    client; those that came before it are all caught here: read (`stray`, or queued: aiohttp's
    own `should_close`) or still in the socket (peeked).

    And what the retry rule needs is noted (`_attempt`): whether the connection was reused, and when."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # aiohttp builds each connection's protocol with this (a private name, stable since 3.0;
        # tests/unit/test_upstream_client.py fails if a new aiohttp stops calling it)
        self._factory = functools.partial(_Handler, loop=self._loop)
        self._served: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()  # carried a request already

    async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:  # noqa: ASYNC109 - aiohttp's signature
        while True:
            connection = await super().connect(req, traces, timeout)
            protocol = connection.protocol
            if protocol is None:
                return connection
            reused = protocol in self._served
            if reused and (protocol.should_close or getattr(protocol, "stray", True) or _bytes_waiting(protocol)):
                connection.close()
                continue
            self._served.add(protocol)
            attempt = _attempt.get(None)
            if attempt is not None:
                attempt.reused, attempt.protocol, attempt.sent = reused, protocol, time.monotonic()
            return connection


def _bytes_waiting(protocol: ResponseHandler) -> bool:
    """Has the server sent anything (or closed) that the event loop has not read yet?"""
    transport = protocol.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    try:
        peek = socket.socket(sock.family, sock.type, fileno=sock.fileno())
    except OSError:
        return True
    try:
        peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"": closed; a byte: something came
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        peek.detach()  # the connection's own descriptor: not closed here


@dataclass(slots=True)
class Fetched:
    """A whole answer to a probe or a doctor's request."""

    status_code: int
    content: bytes
    headers: dict[str, str]

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return msgspec.json.decode(self.content)


class UpstreamResponse:
    """An open answer: its status and headers read, its body read as it arrives."""

    def __init__(self, raw: aiohttp.ClientResponse) -> None:
        self.raw = raw
        self.status_code = raw.status
        self.reason_phrase = raw.reason or ""
        # as bytes went, latin-1 (aiohttp reads UTF-8, which a client's response cannot always carry)
        headers: dict[str, str] = {}
        for name, value in raw.raw_headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.headers = headers
        self.chunks: AsyncIterator[bytes] = raw.content.iter_any()
        self.deadline: float | None = None

    async def aread(self, limit: int) -> bytes:
        """The whole body; BackendProtocolError past `limit` bytes (decoded)."""
        parts: list[bytes] = []
        size = 0
        async for part in self.chunks:
            size += len(part)
            if size > limit:
                raise BackendProtocolError("", f"answer larger than {limit} bytes")
            parts.append(part)
        return b"".join(parts)

    async def aclose(self) -> None:
        """Give the connection back after a whole answer; otherwise close it, which is how
        llama-server learns that nobody waits for the rest and frees the slot."""
        raw = self.raw
        if raw.content.is_eof() and raw.content.exception() is None:
            raw.release()
        else:
            raw.close()


class UpstreamClient:
    def __init__(self, name: str, config: BackendConfig) -> None:
        self.name = name
        self.config = config
        self.base, self._basic = _without_userinfo(config.url.rstrip("/").removesuffix("/v1"))
        self.egress: Egress = egress_for(name, config, self.base)
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}  # parsed once: yarl's parsing is a visible part of a request

    def url(self, path: str) -> str:
        return self.base + path

    def _url(self, path: str) -> URL:
        found = self._urls.get(path)
        if found is None:
            found = URL(self.url(path))
            if "?" not in path:  # a client's query string is not kept: there is no end to them
                self._urls[path] = found
        return found

    @property
    def session(self) -> aiohttp.ClientSession:
        """Made on first use, on the running loop."""
        if self._session is None or self._session.closed:
            connector = _Connector(
                limit=self.config.connection_limit,
                limit_per_host=0,
                keepalive_timeout=KEEPALIVE.get(self.config.kind, KEEPALIVE_DEFAULT),
                ssl=self.egress.tls if self.egress.tls is not None else True,
                ttl_dns_cache=10,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.config.timeouts.connect),
                proxy=self.egress.proxy,
                proxy_auth=self.egress.proxy_auth,
                trust_env=False,  # the environment was read once, in egress_for
                skip_auto_headers=("user-agent",),
                cookie_jar=aiohttp.DummyCookieJar(),  # an API answer's cookies are nobody's business
                auto_decompress=True,
                max_field_size=16 * 1024,
            )
        return self._session

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[UpstreamResponse, bytes]:
        """A whole (non-streamed) answer and its decoded body; raises BackendError for anything
        but 2xx, and for a body over MAX_ANSWER_BYTES."""
        response = await self._open(path, body, headers, self.config.timeouts.first_byte)
        try:
            async with asyncio.timeout(self.config.timeouts.idle):
                content = await response.aread(MAX_ANSWER_BYTES)
        except TimeoutError:
            raise BackendTimeout(self.name, "response body stalled") from None
        except BackendProtocolError as exc:
            raise BackendProtocolError(self.name, exc.reason) from None
        except TransportError as exc:
            raise BackendProtocolError(self.name, f"response body broken off: {describe(exc)}") from None
        finally:
            await response.aclose()
        return response, content

    async def stream(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[UpstreamResponse, bytes]:
        """Open a streamed answer and read its first chunk; the caller owns `response` (and
        closes it), its remaining chunks read with `rest(response)` or `next_chunk(response)`."""
        total = self.config.timeouts.total
        deadline = asyncio.get_running_loop().time() + total if total else None
        response = await self._open(path, body, headers, self.config.timeouts.first_byte)
        try:
            kind = response.headers.get("content-type", "")
            if "event-stream" not in kind:
                raise BackendProtocolError(self.name, f"asked for a stream, answered {kind or 'no content-type'}")
            response.deadline = deadline
            try:
                async with asyncio.timeout(self.config.timeouts.first_byte):
                    first = await anext(response.chunks, b"")
            except TimeoutError:
                raise BackendTimeout(self.name, f"no first byte within {self.config.timeouts.first_byte:g}s") from None
            except TransportError as exc:
                raise BackendBroken(self.name, f"stream broke before its first byte: {describe(exc)}") from None
        except BaseException:  # a failure, or the client gone (cancelled): the connection closes now
            await response.aclose()
            raise
        return response, first

    async def rest(self, response: UpstreamResponse) -> AsyncIterator[bytes]:
        """The chunks after the first; TimeoutError / TransportError propagate to the caller."""
        while True:
            chunk = await self.next_chunk(response)
            if chunk is None:
                return
            if chunk:
                yield chunk

    async def next_chunk(self, response: UpstreamResponse) -> bytes | None:
        """The stream's next chunk within `idle` (and `total`); None at its end."""
        deadline = response.deadline
        loop = asyncio.get_running_loop()
        wake = loop.time() + self.config.timeouts.idle
        try:
            async with asyncio.timeout_at(wake if deadline is None else min(wake, deadline)):
                return await anext(response.chunks, None)
        except TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                raise TotalTimeout from None
            raise

    async def fetch(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        within: float | None = None,
    ) -> Fetched:
        """A whole answer of any status, for probes and the doctor: never sent twice, never
        over MAX_FETCH_BYTES. Raises TimeoutError, or TransportError (say it with `describe`)."""
        async with asyncio.timeout(within or self.config.timeouts.connect):
            async with self.session.request(
                method, self.url(path), data=body, headers=self._with_auth(dict(headers or {})), allow_redirects=False
            ) as raw:
                response = UpstreamResponse(raw)
                try:
                    content = await response.aread(MAX_FETCH_BYTES)
                except BackendProtocolError as exc:
                    raise aiohttp.ClientPayloadError(exc.reason) from None
                return Fetched(raw.status, content, response.headers)

    async def health(self, path: str, headers: Mapping[str, str] | None = None) -> Probe:
        """Up when `path` answers below 500 within the connect timeout (an auth error is reachable,
        and said: a key the backend refuses is worth knowing before the first request)."""
        try:
            response = await self.fetch("GET", path, headers)
        except Exception as exc:  # noqa: BLE001 - any failure means "down", said in the detail
            return Probe(False, describe(exc))
        code = response.status_code
        if code >= 500:
            return Probe(False, f"{path} answered HTTP {code}")
        if code < 300:
            return Probe(True, "up")
        if code in (401, 403) and headers:
            return Probe(True, f"up, but {path} refused the configured api_key (HTTP {code})")
        return Probe(True, f"up ({path} answered HTTP {code})")

    async def model_ids(self, headers: Mapping[str, str]) -> list[str]:
        """The ids an OpenAI-style `/v1/models` lists (llama-server, vLLM, ...); [] when it cannot say."""
        try:
            response = await self.fetch("GET", "/v1/models", headers)
            data = response.json().get("data") if response.status_code == 200 else None
        except Exception:  # noqa: BLE001 - a listing is best effort
            return []
        return [m["id"] for m in data or () if isinstance(m, dict) and isinstance(m.get("id"), str)]

    def _with_auth(self, headers: dict[str, str]) -> dict[str, str]:
        """user:password in the backend's URL is HTTP basic auth, unless a key is sent instead."""
        if self._basic and not any(name.lower() == "authorization" for name in headers):
            headers["authorization"] = self._basic
        return headers

    async def aclose(self) -> None:
        if self._session is not None:
            with suppress(Exception):
                await self._session.close()

    async def _open(self, path: str, body: bytes, headers: Mapping[str, str], wait: float) -> UpstreamResponse:
        headers = self._with_auth({"accept-encoding": "identity", **headers})
        session = self.session
        url = self._url(path)
        for attempt in (1, 2):
            noted = _Attempt()
            token = _attempt.set(noted)
            try:
                async with asyncio.timeout(wait):
                    raw = await session.post(url, data=body, headers=headers, allow_redirects=False)
                break
            except aiohttp.ConnectionTimeoutError:
                raise BackendUnavailable(self.name, "connect timed out") from None
            except TimeoutError:
                raise BackendTimeout(self.name, f"no response within {wait:g}s") from None
            except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS, the proxy: nothing was sent
                raise BackendUnavailable(self.name, describe(exc)) from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # The one case for sending it again: a kept-alive connection the server closed at
                # once, before a single byte came back (not even a 1xx): it processed nothing. Or
                # one whose request could not even be written (reset as it went out: the server
                # never had all of it). A reset once all of it went out is not sent again: a proxy
                # may have passed it on already.
                unsent = isinstance(exc, aiohttp.ServerDisconnectedError) or _unsent(exc)
                if attempt == 2 or not unsent or not noted.may_send_again():
                    said = (
                        "closed without an answer"
                        if isinstance(exc, aiohttp.ServerDisconnectedError)
                        else "no usable answer"
                    )
                    raise BackendBroken(self.name, f"{said}: {describe(exc)}") from None
            except aiohttp.ClientError as exc:
                raise BackendBroken(self.name, f"no usable answer: {describe(exc)}") from None
            except ValueError as exc:  # aiohttp refuses a header it cannot send (a line break in it)
                raise BackendBroken(self.name, f"cannot send the request: {safe_text(str(exc), limit=120)}") from None
            finally:
                _attempt.reset(token)
        response = UpstreamResponse(raw)
        try:
            if response.status_code >= 400:
                await _raise_for_status(self.name, response)
            if not 200 <= response.status_code < 300:
                where = response.headers.get("location")
                moved = f" to {where[:200]}" if where else ""
                raise BackendProtocolError(self.name, f"answered HTTP {response.status_code}{moved}, not an answer")
            encodings = {e.strip().lower() for e in response.headers.get("content-encoding", "identity").split(",")}
            if not encodings <= DECODED_ENCODINGS:
                unknown = ", ".join(sorted(encodings - DECODED_ENCODINGS))
                raise BackendProtocolError(
                    self.name, f"answered with content-encoding {unknown}, which ccgate cannot decode"
                )
        except BaseException:
            await response.aclose()
            raise
        return response


async def _raise_for_status(name: str, response: UpstreamResponse) -> None:
    body = b""
    with suppress(TimeoutError, TransportError):
        async with asyncio.timeout(10):
            async for chunk in response.chunks:
                body += chunk
                if len(body) > MAX_ERROR_BODY:
                    break
    status = response.status_code
    message = upstream_error_message(body) or response.reason_phrase or "error"
    raise BackendHTTPError(name, status, message, upstream_error_type(body), upstream_n_ctx(body))


def _unsent(exc: aiohttp.ClientOSError) -> bool:
    """aiohttp's word for a request whose body it could not write (ClientRequest.write_bytes,
    3.14: "Can not write request body for <url>"; tests/unit/test_upstream_client.py pins it)."""
    return "Can not write request body" in str(exc)


def describe(exc: BaseException) -> str:
    """A short, credential-free reason for a transport failure (never the URL)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect timed out"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy refused the connection (HTTP {exc.status} {safe_text(exc.message, limit=80)})"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"cannot connect to the proxy ({_os_reason(exc.os_error)})"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        return f"TLS certificate not trusted ({safe_text(str(reason), limit=120)}): set ca_file or SSL_CERT_FILE"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return f"TLS handshake failed ({safe_text(str(getattr(exc, 'os_error', exc)), limit=120)})"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {exc.host}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect ({_os_reason(exc.os_error)})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection" + ("" if isinstance(exc.message, str) else " mid-head")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the answer broke off ({safe_text(str(exc), limit=120)})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"malformed response ({safe_text(exc.message, limit=120)})"
    if isinstance(exc, aiohttp.ClientOSError):
        return _os_reason(exc)
    return safe_text(str(exc), limit=160) or type(exc).__name__


def _without_userinfo(url: str) -> tuple[str, str | None]:
    """The URL without user:password, and those as a basic Authorization value."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), "Basic " + base64.b64encode(pair).decode()


def _os_reason(exc: OSError) -> str:
    return exc.strerror or safe_text(str(exc), limit=120) or type(exc).__name__
