"""One pooled HTTP client per backend, with the timeouts a model server needs.

httpx's read timeout is one number for every read, but a model server has two very different
waits: the first byte (prompt processing: minutes for a cold 20k-token prompt on a CPU) and the
gap between two chunks. Both are enforced here with `asyncio.timeout`, and every transport
failure is turned into the BackendError that dispatch decides on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress

import httpx

from router.backends.base import (
    BackendBroken,
    BackendHTTPError,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    Probe,
)
from router.backends.wire import WireClient, WireResponse
from router.policy.schema import BackendConfig
from router.protocol.errors import upstream_error_message, upstream_error_type, upstream_n_ctx

MAX_ERROR_BODY = 64 * 1024
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # a whole (non-streamed) answer; no model answer comes near it
# What httpx decodes; ccgate asks for identity, but a server may compress anyway.
DECODED_ENCODINGS = frozenset({"identity", "gzip", "deflate", "x-gzip"})


class TotalTimeout(TimeoutError):
    """The answer went on past `timeouts.total`."""


class UpstreamClient:
    """Requests go over `wire` (the request path's own HTTP/1.1 client); probes and listings over
    `client` (httpx)."""

    def __init__(self, name: str, config: BackendConfig, max_connections: int = 256) -> None:
        self.name = name
        self.config = config
        self.base = config.url.rstrip("/").removesuffix("/v1")
        t = config.timeouts
        self.wire = WireClient(self.base, t.connect, max_connections=max_connections)
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=t.connect, read=None, write=t.idle, pool=t.first_byte),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=32),
            headers={"accept-encoding": "identity"},
            follow_redirects=False,
            trust_env=False,
        )

    def url(self, path: str) -> str:
        return self.base + path

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[WireResponse, bytes]:
        """A whole (non-streamed) answer and its decoded body; raises BackendError for anything
        but 2xx, and for a body over MAX_ANSWER_BYTES."""
        response = await self._open(path, body, headers, self.config.timeouts.first_byte)
        parts: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.config.timeouts.idle):
                async for part in response.aiter_bytes():
                    size += len(part)
                    if size > MAX_ANSWER_BYTES:
                        raise BackendProtocolError(self.name, f"answer larger than {MAX_ANSWER_BYTES} bytes")
                    parts.append(part)
        except TimeoutError:
            raise BackendTimeout(self.name, "response body stalled") from None
        except httpx.HTTPError as exc:
            raise BackendProtocolError(self.name, f"response body broken off: {describe(exc)}") from None
        finally:
            await response.aclose()
        return response, b"".join(parts)

    async def stream(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[WireResponse, bytes]:
        """Open a streamed answer and read its first chunk; the caller owns `response`.

        The rest of the body is read with `rest(response)`, from the same iterator.
        """
        total = self.config.timeouts.total
        deadline = asyncio.get_running_loop().time() + total if total else None
        response = await self._open(path, body, headers, self.config.timeouts.first_byte)
        kind = response.headers.get("content-type", "")
        if "event-stream" not in kind:
            await response.aclose()
            raise BackendProtocolError(self.name, f"asked for a stream, answered {kind or 'no content-type'}")
        chunks = response.aiter_bytes()
        response.extensions["ccgate_chunks"] = chunks
        response.extensions["ccgate_deadline"] = deadline
        try:
            async with asyncio.timeout(self.config.timeouts.first_byte):
                first = await anext(chunks, b"")
        except TimeoutError:
            await response.aclose()
            raise BackendTimeout(self.name, f"no first byte within {self.config.timeouts.first_byte:g}s") from None
        except httpx.HTTPError as exc:
            await response.aclose()
            raise BackendBroken(self.name, f"stream broke before its first byte: {describe(exc)}") from None
        return response, first

    async def rest(self, response: WireResponse) -> AsyncIterator[bytes]:
        """The chunks after the first; TimeoutError / httpx.HTTPError propagate to the caller."""
        while True:
            chunk = await self.next_chunk(response)
            if chunk is None:
                return
            if chunk:
                yield chunk

    async def next_chunk(self, response: WireResponse) -> bytes | None:
        """The stream's next chunk within `idle` (and `total`); None at its end."""
        chunks = response.extensions["ccgate_chunks"]
        deadline: float | None = response.extensions["ccgate_deadline"]
        loop = asyncio.get_running_loop()
        wake = loop.time() + self.config.timeouts.idle
        try:
            async with asyncio.timeout_at(wake if deadline is None else min(wake, deadline)):
                return await anext(chunks, None)
        except TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                raise TotalTimeout from None
            raise

    async def health(self, path: str, headers: Mapping[str, str] | None = None) -> Probe:
        """Up when `path` answers below 500 within the connect timeout (an auth error is reachable,
        and said: a key the backend refuses is worth knowing before the first request)."""
        try:
            response = await self.client.get(self.url(path), headers=headers, timeout=self.config.timeouts.connect)
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
            response = await self.client.get(
                self.url("/v1/models"), headers=headers, timeout=self.config.timeouts.connect
            )
            data = response.json().get("data") if response.status_code == 200 else None
        except Exception:  # noqa: BLE001 - a listing is best effort
            return []
        return [m["id"] for m in data or () if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def aclose(self) -> None:
        with suppress(Exception):
            await self.wire.aclose()
        with suppress(Exception):
            await self.client.aclose()

    async def _open(self, path: str, body: bytes, headers: Mapping[str, str], wait: float) -> WireResponse:
        headers = {"accept-encoding": "identity", **headers}
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(wait):
                    response = await self.wire.request("POST", path, body, headers)
                break
            except TimeoutError:
                raise BackendTimeout(self.name, f"no response within {wait:g}s") from None
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise BackendUnavailable(self.name, describe(exc)) from None
            except httpx.RemoteProtocolError as exc:
                # A pooled keep-alive connection the server closed just as we reused it
                # (llama-server closes one after 100 requests): once more on a fresh one.
                if attempt == 2:
                    raise BackendBroken(self.name, f"closed without an answer: {describe(exc)}") from None
            except httpx.HTTPError as exc:
                raise BackendBroken(self.name, f"closed without an answer: {describe(exc)}") from None
        if response.status_code >= 400:
            await _raise_for_status(self.name, response)
        if not 200 <= response.status_code < 300:
            await response.aclose()
            where = response.headers.get("location")
            moved = f" to {where[:200]}" if where else ""
            raise BackendProtocolError(self.name, f"answered HTTP {response.status_code}{moved}, not an answer")
        encodings = {e.strip().lower() for e in response.headers.get("content-encoding", "identity").split(",")}
        if not encodings <= DECODED_ENCODINGS:
            await response.aclose()
            unknown = ", ".join(sorted(encodings - DECODED_ENCODINGS))
            raise BackendProtocolError(
                self.name, f"answered with content-encoding {unknown}, which ccgate cannot decode"
            )
        return response


async def _raise_for_status(name: str, response: WireResponse) -> None:
    try:
        async with asyncio.timeout(10):
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_ERROR_BODY:
                    break
    except (TimeoutError, httpx.HTTPError):
        body = b""
    finally:
        await response.aclose()
    status = response.status_code
    message = upstream_error_message(body) or response.reason_phrase or "error"
    raise BackendHTTPError(name, status, message, upstream_error_type(body), upstream_n_ctx(body))


def describe(exc: BaseException) -> str:
    """A short, credential-free reason for a transport failure (never the URL)."""
    if isinstance(exc, httpx.ConnectError):
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ConnectionRefusedError):
                return "connection refused"
            cause = cause.__cause__ or cause.__context__
        return f"cannot connect ({exc or type(exc).__name__})"
    if isinstance(exc, httpx.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, httpx.PoolTimeout):
        return "no free connection in the pool"
    return str(exc) or type(exc).__name__
