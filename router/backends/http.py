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
from router.policy.schema import BackendConfig
from router.protocol.errors import upstream_error_message, upstream_error_type, upstream_n_ctx

MAX_ERROR_BODY = 64 * 1024


class TotalTimeout(TimeoutError):
    """The answer went on past `timeouts.total`."""


class UpstreamClient:
    def __init__(self, name: str, config: BackendConfig, max_connections: int = 256) -> None:
        self.name = name
        self.config = config
        self.base = config.url.rstrip("/").removesuffix("/v1")
        t = config.timeouts
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=t.connect, read=None, write=t.idle, pool=t.first_byte),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=32),
            headers={"accept-encoding": "identity"},
            follow_redirects=False,
            trust_env=False,
        )

    def url(self, path: str) -> str:
        return self.base + path

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """A whole (non-streamed) answer; raises BackendError for anything but 2xx."""
        response = await self._open(path, body, headers, self.config.timeouts.first_byte)
        try:
            async with asyncio.timeout(self.config.timeouts.idle):
                await response.aread()
        except TimeoutError:
            raise BackendTimeout(self.name, "response body stalled") from None
        except httpx.HTTPError as exc:
            raise BackendProtocolError(self.name, f"response body broken off: {describe(exc)}") from None
        finally:
            await response.aclose()
        return response

    async def stream(self, path: str, body: bytes, headers: Mapping[str, str]) -> tuple[httpx.Response, bytes]:
        """Open a streamed answer and read its first chunk; the caller owns `response`.

        The rest of the body is read with `rest(response)`, from the same iterator.
        """
        total = self.config.timeouts.total
        deadline = asyncio.get_running_loop().time() + total if total else None
        response = await self._open(path, body, headers, self.config.timeouts.first_byte)
        chunks = response.aiter_raw()
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

    async def rest(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The chunks after the first; TimeoutError / httpx.HTTPError propagate to the caller."""
        chunks = response.extensions["ccgate_chunks"]
        deadline: float | None = response.extensions["ccgate_deadline"]
        loop = asyncio.get_running_loop()
        idle = self.config.timeouts.idle
        while True:
            wake = loop.time() + idle
            try:
                async with asyncio.timeout_at(wake if deadline is None else min(wake, deadline)):
                    chunk = await anext(chunks, None)
            except TimeoutError:
                if deadline is not None and loop.time() >= deadline:
                    raise TotalTimeout from None
                raise
            if chunk is None:
                return
            if chunk:
                yield chunk

    async def health(self, path: str) -> Probe:
        """Up when `path` answers below 500 within the connect timeout (an auth error is reachable)."""
        try:
            response = await self.client.get(self.url(path), timeout=self.config.timeouts.connect)
        except Exception as exc:  # noqa: BLE001 - any failure means "down", said in the detail
            return Probe(False, describe(exc))
        if response.status_code < 500:
            return Probe(True, "up")
        return Probe(False, f"{path} answered HTTP {response.status_code}")

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
            await self.client.aclose()

    async def _open(self, path: str, body: bytes, headers: Mapping[str, str], wait: float) -> httpx.Response:
        for attempt in (1, 2):
            request = self.client.build_request("POST", self.url(path), content=body, headers=headers)
            try:
                async with asyncio.timeout(wait):
                    response = await self.client.send(request, stream=True)
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
        return response


async def _raise_for_status(name: str, response: httpx.Response) -> None:
    try:
        async with asyncio.timeout(10):
            body = b""
            async for chunk in response.aiter_raw():
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
