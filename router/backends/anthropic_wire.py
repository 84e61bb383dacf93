"""Backends that speak the Anthropic Messages dialect: the Anthropic API and llama-server.

The body goes through as the client sent it, re-encoded only when something must change (the
model name), and the answer's bytes are relayed without re-encoding them event by event.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from router.backends.base import BackendHTTPError, BackendProtocolError, BackendRunaway, Incoming, Probe, Reply
from router.backends.credentials import credentials
from router.backends.http import UpstreamClient
from router.backends.llama_probe import LlamaProbe
from router.backends.stream import collect, first_event, streaming_reply
from router.backends.tool_guarding import guard_body, guard_for, guarded, runaway_for
from router.config import BackendConfig
from router.policy.prefix import without_billing_header
from router.protocol.anthropic import InvalidRequest, with_fields
from router.protocol.errors import upstream_error_message, upstream_error_type
from router.protocol.sse import Event

JSON = "application/json"

# Headers of the client's that describe the request to an Anthropic-dialect server.
FORWARDED = (
    "anthropic-version",
    "anthropic-beta",
    "user-agent",
    "x-app",
    "x-claude-code-session-id",
    "anthropic-dangerous-direct-browser-access",
)
# Headers of the upstream's answer worth handing back to the client.
RETURNED = ("request-id", "retry-after")
RETURNED_PREFIX = "anthropic-ratelimit-"


class AnthropicWireBackend:
    """Passthrough to `/v1/messages` and `/v1/messages/count_tokens`."""

    forwards_client_headers = True
    streams_upstream = False  # stream non-streaming requests upstream too (see stream.collect)

    def __init__(self, name: str, config: BackendConfig) -> None:
        self.name = name
        self.config = config
        self.http = UpstreamClient(name, config)

    async def messages(self, incoming: Incoming) -> Reply:
        client_streams = bool(incoming.raw.get("stream"))
        body = self._body(incoming, stream=client_streams or self.streams_upstream, messages=True)
        headers = self._headers(incoming.headers)
        path = self._path("/v1/messages", incoming)
        guard = guard_for(self.config, incoming)
        if client_streams or self.streams_upstream:
            response, first = await self.http.stream(path, body, headers)
            first, event = await first_event(self.http, response, first)
            if event.event == "error" or not _starts_a_message(event):
                await response.aclose()
                raise (
                    _error_from_event(self.name, event)
                    if event.event == "error"
                    else BackendProtocolError(
                        self.name, f"the stream did not start with a message_start event (got {event.event or 'data'})"
                    )
                )
            returned = _returned_headers(response.headers)
            runaway = runaway_for(self.config)
            transform, finish = guarded(runaway, *guarded(guard))
            try:
                if not client_streams:
                    message = await collect(self.http, response, first, transform, finish)
                    reply = Reply(status=200, content_type=JSON, body=message, headers=returned)
                else:
                    reply = await streaming_reply(self.http, response, first, transform, finish, headers=returned)
            except BackendRunaway as exc:
                if exc.stopped is not None:  # what dispatch sends when nothing else can take it
                    exc.stopped.runaway, exc.stopped.passthrough = runaway, incoming.dialect == "anthropic"
                raise
        else:
            response, content = await self.http.post(path, body, headers)
            reply = Reply(
                status=200,
                content_type=JSON,
                body=guard_body(self.name, guard, _checked(self.name, content, "message")),
                headers=_returned_headers(response.headers),
            )
        if guard is not None:
            reply.tool_calls = guard.outcomes
        if client_streams or self.streams_upstream:
            reply.runaway = runaway
        reply.passthrough = incoming.dialect == "anthropic"
        return reply

    async def count_tokens(self, incoming: Incoming) -> Reply:
        path = self._path("/v1/messages/count_tokens", incoming)
        _, content = await self.http.post(path, self._body(incoming), self._headers(incoming.headers))
        return Reply(status=200, content_type=JSON, body=_checked(self.name, content, "count"))

    async def probe(self, suspect: bool = False) -> Probe:
        if self.config.health_path:
            return await self.http.health(self.config.health_path)
        if suspect:
            # Cheap and harmless: the Anthropic API lists models to anyone with a key, and answers
            # 401 without one, which still proves DNS, TCP, TLS and an HTTP server work.
            return await self.http.health("/v1/models", credentials(self.config, {}))
        return Probe(True, "not probed", checked=False)

    async def models(self) -> list[str]:
        if self.config.model_names:
            return self.config.model_names
        if self.forwards_client_headers:
            return []  # the Anthropic API lists its models only to a caller with a key
        return await self.http.model_ids(credentials(self.config, {}))

    async def aclose(self) -> None:
        await self.http.aclose()

    def _path(self, path: str, incoming: Incoming) -> str:
        # `?beta=true` means something to the Anthropic API; llama-server has no use for it.
        return f"{path}?{incoming.query}" if incoming.query and self.forwards_client_headers else path

    def _body(self, incoming: Incoming, stream: bool | None = None, messages: bool = False) -> bytes:
        changes: dict[str, object] = self._local_changes(incoming, messages)
        requested = str(incoming.raw.get("model", ""))
        upstream = self.config.upstream_model(requested)
        if upstream != requested:
            changes["model"] = upstream
        if stream is not None and bool(incoming.raw.get("stream")) != stream:
            changes["stream"] = stream
        cap = self.config.output_cap
        asked = incoming.raw.get("max_tokens")
        if messages and cap and isinstance(asked, int) and asked > cap:
            changes["max_tokens"] = cap
        return with_fields(incoming.body, changes, top=incoming.top()) if changes else incoming.body

    def _local_changes(self, incoming: Incoming, messages: bool) -> dict[str, object]:
        return {}

    def _headers(self, client: Mapping[str, str]) -> dict[str, str]:
        headers = {"content-type": JSON}
        if self.forwards_client_headers:
            for key in FORWARDED:
                value = client.get(key)
                if value:
                    headers[key] = value
            headers.setdefault("anthropic-version", "2023-06-01")
        headers.update(credentials(self.config, client))
        return headers


class LlamaCppBackend(AnthropicWireBackend):
    """llama-server's native Anthropic endpoint (llama.cpp PR #17570 and later)."""

    forwards_client_headers = False
    streams_upstream = True

    def __init__(self, name: str, config: BackendConfig) -> None:
        super().__init__(name, config)
        self._probe = LlamaProbe(self.http)
        from router.backends.openai_wire import OpenAIWireBackend  # it imports llama_changes from here

        # llama-server speaks Chat Completions too: a Chat Completions client's body goes there
        # as sent, over the same connections, rather than through the Anthropic dialect and back
        self._chat = OpenAIWireBackend(name, config, self.http)

    async def messages(self, incoming: Incoming) -> Reply:
        # llama-server's /v1/messages keeps only the Anthropic fields when it converts a body
        # (server_chat_convert_anthropic_to_oai): `id_slot` is dropped and the server picks the
        # slot. Pinned to a slot, a request goes to Chat Completions, which honours it.
        if incoming.native is not None:
            return await self._chat.messages(incoming)
        if incoming.slot is not None:
            try:
                return await self._chat.messages(incoming)
            except InvalidRequest:  # a block Chat Completions cannot carry (a PDF): as llama-server's
                pass  # own conversion does (it drops it), on its /v1/messages, unpinned
        return await super().messages(incoming)

    async def probe(self, suspect: bool = False) -> Probe:
        return await self._probe()

    def _local_changes(self, incoming: Incoming, messages: bool) -> dict[str, object]:
        return llama_changes(incoming.raw.get("system"), incoming.slot if messages else None)


def llama_changes(system: object, slot: int | None) -> dict[str, object]:
    """What a llama-server request gets: no billing block (a per-session value at the very start
    of the prompt, it would void the slot's KV cache every time), and the slot to run on."""
    changes: dict[str, object] = {}
    stripped = without_billing_header(system)
    if stripped != system:
        changes["system"] = stripped
    if slot is not None:
        changes["id_slot"] = slot
        changes["cache_prompt"] = True
    return changes


def _checked(name: str, body: bytes, kind: str) -> bytes:
    """The body, if it is a well-formed answer of the kind asked for; only those reach a client."""
    try:
        answer = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise BackendProtocolError(name, f"answered 200 with a body that is not JSON ({len(body)} bytes)") from None
    if kind == "message":
        good = isinstance(answer, dict) and answer.get("type") == "message" and isinstance(answer.get("content"), list)
    else:
        good = isinstance(answer, dict) and type(answer.get("input_tokens")) is int
    if not good:
        what = "a message" if kind == "message" else "a token count"
        raise BackendProtocolError(name, f"answered 200 with JSON that is not {what}")
    return body


def _returned_headers(upstream: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in upstream.items() if k in RETURNED or k.startswith(RETURNED_PREFIX)}


def _starts_a_message(event: Event) -> bool:
    """A message_start event with its message (a stream may open with pings: those are fine too)."""
    if event.event == "ping":
        return True
    if event.event != "message_start":
        return False
    try:
        data = msgspec.json.decode(event.data)
    except msgspec.DecodeError:
        return False
    return isinstance(data, dict) and isinstance(data.get("message"), dict)


def _error_from_event(name: str, event: Event) -> BackendHTTPError:
    """llama-server answers some failures with HTTP 200 whose first SSE event is an error."""
    data = event.data.encode()
    message = upstream_error_message(data) or "error event before any output"
    try:
        code = msgspec.json.decode(data).get("error", {}).get("code")
    except (msgspec.DecodeError, AttributeError):
        code = None
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    return BackendHTTPError(name, status, message, upstream_error_type(data))
