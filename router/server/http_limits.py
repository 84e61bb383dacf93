"""Limits on a request's head that uvicorn's httptools protocol does not set.

Without them a connection that sends its headers a byte at a time (slowloris), or never sends a
request at all, is held for ever, and a head of any size (1,000 headers, a 64 KB line) is read
and kept. Here:

- the request line and headers must arrive within `header_timeout` seconds of the connection
  (or of the request's first byte on a kept-alive one), else 408 and the connection is closed;
- a head over MAX_HEAD_BYTES or MAX_HEADERS is refused with 431 and the connection closed;
- the body must keep coming: no gap of more than `header_timeout` seconds between two of its
  pieces, and all of it within `body_timeout` seconds of the head, else 408 and the connection
  is closed (the handler waiting for it sees the client gone).

A body's size is limited elsewhere (CCGATE_MAX_BODY_BYTES, by Litestar).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; Claude Code sends ~2 KB
MAX_HEADERS = 256
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 120.0

REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class LimitedHttpTools(HttpToolsProtocol):
    header_timeout = DEFAULT_HEADER_TIMEOUT  # set per server by `with_limits`
    body_timeout = DEFAULT_BODY_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_deadline = 0.0
        self._body_seen = 0.0  # when the last piece of the body came
        self._head_bytes = 0
        self._head_count = 0
        self._refusal: tuple[int, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._head_count = 0
        self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4, 1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()
        now = self.loop.time()  # a body may follow (if not, the timer stops at once)
        self._body_deadline = now + self.body_timeout
        self._body_seen = now
        self._wait_for_body()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._body_seen = self.loop.time()  # the timer, when it fires, looks at this: no re-arming per piece

    def on_message_complete(self) -> None:
        self._stop_body_timer()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, which is also how a refused head stops parsing."""
        if self._refusal is None:
            super().send_400_response(msg)
        else:
            self._refuse(*self._refusal)

    def _count(self, size: int, headers: int) -> None:
        self._head_bytes += size
        self._head_count += headers
        if self._head_bytes > MAX_HEAD_BYTES or self._head_count > MAX_HEADERS:
            self._refusal = (431, f"request head over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} headers")
            raise ValueError(self._refusal[1])  # httptools stops and reports it as a parser error

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        if self.header_timeout > 0:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _wait_for_body(self) -> None:
        self._stop_body_timer()
        when = min(self._body_seen + self.header_timeout, self._body_deadline)
        self._body_timer = self.loop.call_at(when, self._body_too_slow)

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if now < self._body_deadline and now < self._body_seen + self.header_timeout:
            self._wait_for_body()  # more came since the timer was set
            return
        cycle = getattr(self, "cycle", None)
        if cycle is not None and cycle.response_started:  # an answer is going out: no room for a 408
            self.transport.close()
            return
        if now >= self._body_deadline:
            self._refuse(408, f"the request body did not arrive within {self.body_timeout:g} s")
        else:
            self._refuse(408, f"the request body stalled for {self.header_timeout:g} s")

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self._refuse(408, f"no complete request head within {self.header_timeout:g} s")

    def _refuse(self, status: int, message: str) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        if self.transport.is_closing():
            return
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, REASONS[status], len(body), body)
        )
        self.transport.close()


def with_limits(header_timeout: float, body_timeout: float) -> type[LimitedHttpTools]:
    """The protocol class for one server, with its own timeouts."""
    return type(
        "LimitedHttpTools", (LimitedHttpTools,), {"header_timeout": header_timeout, "body_timeout": body_timeout}
    )
