"""Backends that speak OpenAI Chat Completions (vLLM, Ollama, LM Studio, llama-server, ...)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from router.backends.anthropic_wire import llama_changes
from router.backends.base import (
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendRunaway,
    Incoming,
    Probe,
    Reply,
)
from router.backends.credentials import credentials
from router.backends.http import UpstreamClient
from router.backends.llama_probe import LlamaProbe
from router.backends.stream import collect, streaming_reply
from router.backends.tool_guarding import guard_body, guard_for, guarded, runaway_for
from router.config import BackendConfig
from router.protocol.anthropic import MessagesRequest
from router.protocol.errors import upstream_error_message, upstream_error_type, upstream_n_ctx
from router.protocol.estimate import estimate_input_tokens
from router.protocol.from_openai import BadUpstreamResponse, StreamTranslator, to_anthropic_message
from router.protocol.sse import Event, SSEDecoder
from router.protocol.to_openai import to_openai_request
from router.protocol.tool_guard import ToolCallGuard

JSON = "application/json"
CHAT = "/v1/chat/completions"


def _capped(body: dict[str, object], cap: int | None) -> dict[str, object]:
    """The client's output limit fields, held to the backend's `output_cap`."""
    if not cap:
        return {}
    return {
        name: min(value, cap)
        for name in ("max_tokens", "max_completion_tokens")
        if isinstance(value := body.get(name), int) and not isinstance(value, bool)
    } or {"max_tokens": cap}


def _llama_anthropic_fields(raw: dict[str, object]) -> dict[str, object]:
    """What llama-server's own /v1/messages makes of an Anthropic body's fields that Chat
    Completions has no word for (server_chat_convert_anthropic_to_oai), and per-token timings:
    the first chunk then says the prompt's tokens, which message_start reports."""
    fields: dict[str, object] = {"timings_per_token": True}
    thinking = raw.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        fields["thinking_budget_tokens"] = budget if isinstance(budget, int) and not isinstance(budget, bool) else 10000
    choice = raw.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool":
        fields["tool_choice"] = "required"  # llama-server reads tool_choice as a string only
    if isinstance(raw.get("chat_template_kwargs"), dict):
        fields["chat_template_kwargs"] = raw["chat_template_kwargs"]
    return fields


def _error_before_output(name: str, data: bytes, error: dict[str, object]) -> BackendError:
    """An error chunk before any output (llama-server sends one after its headers when the model
    fails): an HTTP error of its code, as the Anthropic path makes of its error event."""
    code = error.get("code")
    if type(code) is not int or not 400 <= code < 600:
        return BackendProtocolError(name, upstream_error_message(data) or "error before any output")
    message = upstream_error_message(data) or "error before any output"
    return BackendHTTPError(name, code, message, upstream_error_type(data), upstream_n_ctx(data))


class OpenAIWireBackend:
    def __init__(self, name: str, config: BackendConfig, http: UpstreamClient | None = None) -> None:
        self.name = name
        self.config = config
        self.http = http or UpstreamClient(name, config)
        self._llama = LlamaProbe(self.http) if config.kind == "llamacpp" and not config.health_path else None

    async def messages(self, incoming: Incoming) -> Reply:
        request = incoming.request
        assert isinstance(request, MessagesRequest)
        model = self.config.upstream_model(request.model)
        headers = {"content-type": JSON, **credentials(self.config, incoming.headers)}
        # llama-server gets non-streaming requests streamed too: see stream.collect.
        guard = guard_for(self.config, incoming)
        local: dict[str, object] = {}
        if self.config.kind == "llamacpp":
            local = llama_changes(request.system, incoming.slot)
            if "system" in local:
                request = msgspec.structs.replace(request, system=local.pop("system"))
            if incoming.native is None:
                local.update(_llama_anthropic_fields(incoming.raw))
        cap = self.config.output_cap
        if cap and request.max_tokens > cap:
            request = msgspec.structs.replace(request, max_tokens=cap)
        native = incoming.native
        if native is not None:  # the client's own body: its fields reach the server untranslated
            local.pop("system", None)  # its system prompt is in its messages, as it sent them
            local = {"model": model, **_capped(native, cap), **local}
        if request.stream or self.config.kind == "llamacpp":
            streamed = request if request.stream else msgspec.structs.replace(request, stream=True)
            base = native if native is not None else to_openai_request(streamed, model)
            usage = {"stream_options": {**(base.get("stream_options") or {}), "include_usage": True}}
            body = msgspec.json.encode({**base, **local, "stream": True, **usage})
            reply = await self._stream(body, headers, request.model, guard, collect_all=not request.stream)
        else:
            body = msgspec.json.encode({**(native or to_openai_request(request, model)), **local})
            _, content = await self.http.post(CHAT, body, headers)
            try:
                decoded = msgspec.json.decode(content)
                if not isinstance(decoded, dict):
                    raise BadUpstreamResponse(f"expected a JSON object, got {type(decoded).__name__}")
                message = to_anthropic_message(decoded, request.model, keep_invalid=guard is not None)
            except (msgspec.DecodeError, BadUpstreamResponse, AttributeError, TypeError, KeyError) as exc:
                raise BackendProtocolError(self.name, f"unusable chat completion: {exc}") from None
            reply = Reply(
                status=200, content_type=JSON, body=guard_body(self.name, guard, msgspec.json.encode(message))
            )
        if guard is not None:
            reply.tool_calls = guard.outcomes
        reply.passthrough = native is not None
        return reply

    async def _stream(
        self, body: bytes, headers: dict[str, str], model: str, guard: ToolCallGuard | None, collect_all: bool = False
    ) -> Reply:
        response, first = await self.http.stream(CHAT, body, headers)
        decoder = SSEDecoder()
        translator = StreamTranslator(model)

        def handle(events: Iterable[Event]) -> list[bytes]:
            out: list[bytes] = []
            for event in events:
                if event.data == "[DONE]":
                    out += translator.finish()
                    continue
                try:
                    chunk = msgspec.json.decode(event.data)
                    if not translator.started and isinstance(chunk, dict) and isinstance(chunk.get("error"), dict):
                        raise _error_before_output(self.name, event.data.encode(), chunk["error"])
                    out += translator.feed(chunk)
                except msgspec.DecodeError:
                    raise BackendProtocolError(self.name, "stream event is not JSON") from None
                except BadUpstreamResponse as exc:
                    raise BackendProtocolError(self.name, str(exc)) from None
            return out

        def transform(chunk: bytes) -> Iterable[bytes]:
            return handle(decoder.feed(chunk))

        def finish() -> Iterable[bytes]:
            return handle(decoder.flush()) + translator.finish()

        runaway = runaway_for(self.config)
        outer, outer_finish = guarded(runaway, *guarded(guard, transform, finish))
        try:
            if collect_all:
                message = await collect(self.http, response, first, outer, outer_finish)
                return Reply(status=200, content_type=JSON, body=message, runaway=runaway)
            reply = await streaming_reply(self.http, response, first, outer, outer_finish)
        except BackendRunaway as exc:
            if exc.stopped is not None:  # what dispatch sends when nothing else can take it
                exc.stopped.runaway = runaway
            raise
        reply.runaway = runaway
        return reply

    async def count_tokens(self, incoming: Incoming) -> Reply:
        """Chat Completions has no token counter: the known prefix's measured count plus an
        estimate of the rest, else a byte-based estimate, as documented."""
        count = incoming.known_tokens or estimate_input_tokens(incoming.raw)
        return Reply(status=200, content_type=JSON, body=msgspec.json.encode({"input_tokens": count}))

    async def probe(self, suspect: bool = False) -> Probe:
        if self._llama is not None:
            return await self._llama()
        return await self.http.health(self.config.health_path or "/v1/models", credentials(self.config, {}))

    async def models(self) -> list[str]:
        if self.config.model_names:
            return self.config.model_names
        return await self.http.model_ids(credentials(self.config, {}))

    async def aclose(self) -> None:
        await self.http.aclose()
