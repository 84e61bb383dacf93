"""One structured line per request, and its trace id on every answer.

The model routes (api/ingress.py) log their own line, answered or refused, and set the header on
their own answers: they alone know the rule, backend and key. Every other answer (/admin/*, the
probes, /metrics, /v1/models, /openapi.json, and errors answered outside a handler) goes through
`every_answer_traced`, which gives it a span, the `x-ccgate-trace-id` header and, for /admin/*
and for anything refused, the same line. Probes and scrapes that succeed are not logged: a line
a second per prober would bury the requests people look for.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from opentelemetry import trace

from router.policy.features import client_kind
from router.telemetry.tracing import trace_id

log = logging.getLogger("ccgate.api")

TRACE_HEADER = b"x-ccgate-trace-id"
# Every request line carries these keys (None where a request has no such thing), so a log query
# on one of them never has to guess whether a refusal would have it.
FIELDS = (
    "op",
    "method",
    "path",
    "status",
    "reason",
    "message",
    "model",
    "rule",
    "backend",
    "slot",
    "reused_tokens",
    "stream",
    "ms",
    "fallbacks",
    "handoff",
    "client",
    "dialect",
    "passthrough",
    "key",
    "team",
    "trace_id",
)
# Routes whose handlers log and trace themselves when POSTed to (api/ingress.py): passed through.
MODEL_ROUTES = frozenset({"/v1/messages", "/v1/messages/count_tokens", "/v1/chat/completions", "/v1/responses"})


OPS = {
    "/v1/messages": "messages",
    "/v1/chat/completions": "messages",
    "/v1/responses": "messages",
    "/v1/messages/count_tokens": "count_tokens",
    "/v1/models": "models",
}


def op_of(path: str) -> str:
    """What a line's `op` says: the model API's operation, else the path's first part (admin, healthz...)."""
    path = path.rstrip("/")
    return OPS.get(path) or path.strip("/").split("/")[0] or "index"


def _error_message(body: bytes) -> str | None:
    """The message of an error body in either dialect's shape, if that is what it is."""
    try:
        error = msgspec.json.decode(body).get("error") if body else None
    except (msgspec.DecodeError, AttributeError):
        return None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


def request_line(level: int, text: str, **fields: Any) -> None:
    # a path or message a client chose is one line, whatever it holds (text logs split at \n)
    text = text.translate(CONTROL)
    log.log(level, "%s", text, extra={"fields": {name: fields.get(name) for name in FIELDS}})


CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def refusal_level(status: int) -> int:
    return logging.WARNING if status >= 500 or status in (429, 529) else logging.INFO


def every_answer_traced(app: Any) -> Any:
    """ASGI middleware: the answers the model routes do not trace themselves get a span, the
    trace id header, and (for /admin/* and refusals) a request line."""

    async def middleware(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or (scope["method"] == "POST" and scope["path"].rstrip("/") in MODEL_ROUTES):
            await app(scope, receive, send)
            return
        started_ns = time.time_ns()
        started = time.perf_counter()
        span: trace.Span | None = None
        status = 0
        said = b""  # a refusal's body, for the message in its line

        async def traced_send(message: dict) -> None:
            nonlocal span, status, said
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers") or [])
                if not any(name.lower() == TRACE_HEADER for name, _ in headers):
                    span = _span(scope, status, started_ns)
                    found = trace_id(span)
                    if found:
                        headers.append((TRACE_HEADER, found.encode()))
                        message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and span is not None:
                if status >= 400 and len(said) < 4096:
                    said += message.get("body") or b""
                if not message.get("more_body"):
                    span.end()
                    _log(scope, status, span, started, said)
                    span = None
            await send(message)

        try:
            await app(scope, receive, traced_send)
        finally:
            if span is not None:  # the answer never finished (the client left)
                span.end()

    return middleware


def _span(scope: dict, status: int, started_ns: int) -> trace.Span:
    app = scope.get("app")
    gateway = getattr(getattr(app, "state", None), "gateway", None) if app is not None else None
    tracer = gateway.tracer if gateway is not None else trace.get_tracer("ccgate")
    method, path = scope["method"], scope["path"]
    span = tracer.start_span(
        f"{method} {path}",
        kind=trace.SpanKind.SERVER,
        start_time=started_ns,
        attributes={"http.request.method": method, "url.path": path, "http.response.status_code": status},
    )
    if status >= 500:
        span.set_status(trace.Status(trace.StatusCode.ERROR))
    return span


def _log(scope: dict, status: int, span: trace.Span, started: float, said: bytes) -> None:
    path = scope["path"]
    if status < 400 and not path.startswith("/admin/"):
        return
    method = scope["method"]
    ms = round((time.perf_counter() - started) * 1000, 1)
    agent = next((v.decode("latin-1") for k, v in scope.get("headers") or () if k == b"user-agent"), "")
    request_line(
        refusal_level(status) if status >= 400 else logging.INFO,
        f"{method} {path}: {status} in {ms:.0f} ms",
        op=op_of(path),
        method=method,
        path=path,
        status=status,
        reason=f"HTTP {status}" if status >= 400 else None,
        message=_error_message(said),
        ms=ms,
        client=client_kind(agent),
        trace_id=trace_id(span),
    )
