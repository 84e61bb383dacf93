"""The Backend protocol, what a call returns, and the failures dispatch decides on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from router.config import BackendConfig
from router.protocol.anthropic import CountTokensRequest, MessagesRequest, top_fields
from router.protocol.errors import BadUpstreamResponse, anthropic_error_event
from router.protocol.redact import safe_text
from router.protocol.runaway_stream import RunawayGuard
from router.protocol.usage import Usage, UsageTap, usage_of_message


class BackendError(Exception):
    """A backend could not answer. `retryable`: the next candidate may take the request.

    `reason` often quotes the upstream; it is made safe here (bounded, one line, nothing
    credential-shaped), and dispatch redacts the keys it knows of with `redact`."""

    status = 502
    retryable = True

    def __init__(self, backend: str, reason: str) -> None:
        reason = safe_text(reason)
        super().__init__(f"{backend}: {reason}")
        self.backend = backend
        self.reason = reason

    def redact(self, secrets: Iterable[str | None]) -> None:
        self.reason = safe_text(self.reason, secrets)
        self.args = (f"{self.backend}: {self.reason}",)


class BackendUnavailable(BackendError):
    """Connection refused, DNS failure, reset before an answer: nothing was processed."""

    status = 529


class BackendBroken(BackendError):
    """The backend took the request, then broke off (reset, closed) before answering."""

    status = 502


class BackendTimeout(BackendError):
    status = 504


class BackendProtocolError(BackendError):
    """The backend answered, but not with a valid response of its dialect."""

    status = 502


class BackendToolCallError(BackendError):
    """The model's tool call is unusable (unreadable, unknown tool, arguments against the schema)."""

    status = 502

    def __init__(self, backend: str, kind: str, message: str) -> None:
        message = safe_text(message)
        super().__init__(backend, f"unusable tool call ({kind}): {message}")
        self.kind = kind
        self.message = message


class BackendRunaway(BackendError):
    """The model started repeating itself before anything reached the client. `stopped`: the
    answer as stopped (what it wrote, then the note and the end), for when nothing else can take
    the request: better than an error."""

    status = 502

    def __init__(self, backend: str, reason: str, stopped: Reply | None = None) -> None:
        super().__init__(backend, reason)
        self.stopped = stopped


class BackendHTTPError(BackendError):
    """The backend answered with an error status; its body is kept for the client."""

    def __init__(
        self, backend: str, status: int, message: str, error_type: str | None = None, n_ctx: int | None = None
    ) -> None:
        message = safe_text(message)
        super().__init__(backend, f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.error_type = error_type
        self.n_ctx = n_ctx  # llama.cpp's exceed_context_size_error says its context size
        # 5xx, 429, 529 and llama.cpp's context overflow may succeed elsewhere; other 4xx would not.
        self.retryable = status >= 500 or status == 429 or error_type == "exceed_context_size_error"

    def redact(self, secrets: Iterable[str | None]) -> None:
        super().redact(secrets)
        self.message = safe_text(self.message, secrets)


@dataclass(frozen=True, slots=True)
class Probe:
    """What one poll of a backend found; None where the backend cannot say."""

    healthy: bool
    detail: str = ""
    # False when nothing was checked (a backend without a health path): the probe then says
    # nothing against what real requests last showed (passive health, state/store.py).
    checked: bool = True
    processing: int | None = None
    deferred: int | None = None
    slots: int | None = None
    n_ctx: int | None = None
    kv_cache: float | None = None
    model: str | None = None  # what the server says it runs (llama-server: /props model_path)
    slot_files: bool | None = None  # llama-server: slots may be saved to files (--slot-save-path)
    restarted: bool = False  # llama-server: restarted since the last poll (its slots are empty)


@dataclass(slots=True)
class Incoming:
    """What the client sent, as a backend needs it."""

    request: MessagesRequest | CountTokensRequest
    raw: dict[str, Any]  # the decoded body, for dialect-native passthrough
    body: bytes  # the body as received, forwarded untouched when nothing must change
    headers: Mapping[str, str]
    query: str = ""
    slot: int | None = None  # the llama.cpp slot to run on (id_slot), chosen by prefix affinity
    # The prompt's tokens as measured for its known prefix (prefix index) plus an estimate of
    # the rest; for backends without a token counter of their own.
    known_tokens: int | None = None
    # The client's own Chat Completions body: a backend that speaks that dialect is sent it
    # (model, slot and stream options set) instead of a translation of the canonical request.
    # None for other dialects, and once a policy transform changed the request.
    native: dict[str, Any] | None = None
    dialect: str = "anthropic"  # the caller's: anthropic, chat or responses
    # `body`'s top-level fields, once read (prefix hashing reads them; a backend changing a field
    # reuses them). Kept with the body they came from: a copy with another body does not use them.
    read: tuple[bytes, dict[str, msgspec.Raw]] | None = None

    def top(self) -> dict[str, msgspec.Raw]:
        if self.read is None or self.read[0] is not self.body:
            self.read = (self.body, top_fields(self.body))
        return self.read[1]


@dataclass(slots=True)
class Reply:
    """An answer in the Anthropic dialect, ready for the client.

    Streaming replies have already produced their first chunk (`first`), so every failure that
    could still move the request to another backend has happened before this object exists.
    """

    status: int
    content_type: str
    body: bytes = b""
    first: bytes = b""
    rest: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    close: Callable[[], Awaitable[None]] | None = None
    on_close: list[Callable[[], None]] = field(default_factory=list)  # run once, after `close`
    usage: Usage = field(default_factory=Usage)  # complete once the reply is closed
    tool_calls: list[str] = field(default_factory=list)  # the guard's verdict per call (tool_guard)
    runaway: RunawayGuard | None = None  # says, once the answer is over, whether it stopped one
    passthrough: bool = False  # the client's own body went upstream, not a translation of it
    _closed: bool = False

    @property
    def streaming(self) -> bool:
        return self.rest is not None

    def track_usage(self) -> None:
        """Fill `usage` from the answer: now for a whole one, chunk by chunk for a stream."""
        if self.rest is None:
            self.usage = usage_of_message(self.body)
            self._estimates()
            return
        tap = UsageTap(self.usage)
        tap.feed(self.first)
        self.rest = _tapped(self.rest, tap)

    def _estimates(self) -> None:
        """A runaway stop's output count is the guard's estimate: said so in the usage."""
        if self.runaway is not None and self.runaway.estimated:
            self.usage.estimated = self.usage.output

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.close is not None:
                await self.close()
        finally:
            self.usage.settle()  # cut short (the client left, the upstream broke off): what was relayed
            self._estimates()
            for callback in self.on_close:
                callback()


async def _tapped(chunks: AsyncIterator[bytes], tap: UsageTap) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            try:
                tap.feed(chunk)
            except BadUpstreamResponse as exc:  # a line or event without end: stop relaying it
                # the blank line ends whatever unfinished line the client already holds
                yield b"\n\n" + anthropic_error_event(502, f"the backend's stream was cut off: {exc}")
                return
            yield chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


class Backend(Protocol):
    name: str
    config: BackendConfig

    async def messages(self, incoming: Incoming) -> Reply: ...

    async def count_tokens(self, incoming: Incoming) -> Reply: ...

    async def probe(self, suspect: bool = False) -> Probe:
        """Health and load. `suspect`: a real request just failed to reach it, so a backend that
        is not probed otherwise (no health path) gets a cheap reachability check."""
        ...

    async def models(self) -> list[str]:
        """Model ids this backend serves, for `GET /v1/models` (best effort)."""
        ...

    async def aclose(self) -> None: ...
