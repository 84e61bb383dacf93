"""Every failure reaches the client as an error body of its own dialect, never as a stack trace:
Anthropic's `{"type": "error", ...}`, or OpenAI's `{"error": {...}}` on the OpenAI paths."""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException
from opentelemetry import trace
from redis.exceptions import RedisError

from router.api.request_log import op_of, refusal_level, request_line
from router.dispatch import DispatchFailed
from router.policy.features import client_kind
from router.protocol.anthropic import InvalidRequest
from router.protocol.errors import anthropic_error_body, openai_error_body
from router.state.redis_client import reason
from router.telemetry import record
from router.telemetry.tracing import trace_id

log = logging.getLogger("ccgate.api")

ROUTE_HEADERS = ("x-ccgate-route", "x-ccgate-fallback-reason")
# On a refusal no retry can mend: the Anthropic SDKs (Claude Code) then show it at once instead
# of retrying a 401 silently for minutes (measured with the CLIs; README "Team keys").
NO_RETRY = {"x-should-retry": "false"}
OPENAI_PATHS = ("/v1/chat/completions", "/v1/responses")


def openai_path(path: str) -> bool:
    return path.rstrip("/") in OPENAI_PATHS


def error_response(
    status: int,
    message: str,
    error_type: str | None = None,
    headers: dict[str, str] | None = None,
    openai: bool = False,
) -> Response[dict]:
    body = (openai_error_body if openai else anthropic_error_body)(status, message, error_type)
    return Response(body, status_code=status, headers=headers)


def _count_refused(request: Request, status: int) -> None:
    """A request to the model API refused before routing still counts (`outcome` invalid or error)."""
    if request.url.path.startswith("/v1/"):
        record.refused(request.app.state.metrics, status, client_kind(request.headers.get("user-agent", "")))


def on_invalid_request(request: Request, exc: InvalidRequest) -> Response[dict]:
    return traced(request, on_refused(request, exc))


def on_refused(request: Request, exc: InvalidRequest | HTTPException) -> Response[dict]:
    """A body refused before routing: 400 naming the field, or 413; counted as `invalid`."""
    if isinstance(exc, InvalidRequest):
        _count_refused(request, 400)
        return error_response(400, str(exc), openai=openai_path(request.url.path))
    return _http_error(request, exc)


def with_trace_id(response: Response, span: trace.Span) -> Response:
    """Every answer names its trace, the failed ones first of all: that is how an operator finds it."""
    found = trace_id(span)
    if found:
        response.headers["x-ccgate-trace-id"] = found
    return response


def traced(request: Request, response: Response[dict]) -> Response[dict]:
    """An error answered outside a request's own span (404, 405, a fault): a span of its own."""
    gateway = request.app.state.gateway
    span = gateway.tracer.start_span(
        f"{request.method} {request.url.path}",
        kind=trace.SpanKind.SERVER,
        attributes={
            "http.request.method": request.method,
            "url.path": request.url.path,
            "http.response.status_code": response.status_code,
        },
    )
    if response.status_code >= 500:
        span.set_status(trace.Status(trace.StatusCode.ERROR))
    span.end()
    status = response.status_code
    message = response.content.get("error", {}).get("message") if isinstance(response.content, dict) else None
    request_line(
        refusal_level(status),
        f"{request.method} {request.url.path}: {status}: {message}",
        op=op_of(request.url.path),
        method=request.method,
        path=request.url.path,
        status=status,
        reason=_REASONS.get(status, f"HTTP {status}"),
        message=message,
        client=client_kind(request.headers.get("user-agent", "")),
        dialect=("responses" if request.url.path.rstrip("/").endswith("responses") else "chat")
        if openai_path(request.url.path)
        else None,
        trace_id=trace_id(span),
    )
    return with_trace_id(response, span)


_REASONS = {
    400: "invalid request",
    404: "no route",
    405: "method not allowed",
    413: "too large",
    503: "redis unavailable",
}


def on_dispatch_failed(request: Request, exc: DispatchFailed) -> Response[dict]:
    headers = {"x-ccgate-route": exc.rule}
    if exc.status in (401, 403):
        headers.update(NO_RETRY)
    if exc.fallbacks:
        headers["x-ccgate-fallback-reason"] = header_safe("; ".join(exc.fallbacks))
    if exc.status == 529:
        headers["retry-after"] = "1"
    headers.update(exc.headers)
    return error_response(exc.status, exc.message, exc.error_type, headers, openai_path(request.url.path))


def on_http_exception(request: Request, exc: HTTPException) -> Response[dict]:
    return traced(request, _http_error(request, exc))


def _http_error(request: Request, exc: HTTPException) -> Response[dict]:
    status = exc.status_code
    if status == 413:
        limit = request.route_handler.resolve_request_max_body_size()
        message = f"request body is larger than the gateway's limit of {limit} bytes"
    elif status == 404:
        message = f"no route for {request.method} {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    _count_refused(request, status)
    return error_response(status, message, openai=openai_path(request.url.path))


def on_unexpected(request: Request, exc: Exception) -> Response[dict]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    reply = request.state.get("open_reply")
    if reply is not None:  # an answer that could not be sent: its upstream (and llama.cpp slot) go now
        request.app.state.gateway.spawn(reply.aclose())
    _count_refused(request, 500)
    message = f"internal gateway error ({type(exc).__name__})"
    return traced(request, error_response(500, message, openai=openai_path(request.url.path)))


def header_safe(text: str, limit: int = 512) -> str:
    return text.encode("ascii", "replace").decode()[:limit].replace("\r", " ").replace("\n", " ")


def on_redis_unavailable(request: Request, exc: RedisError) -> Response[dict]:
    """Keys, usage and the other /admin/ reads need Redis: while it is away (down, failing over)
    they say so and when to try again, never a 500. (The model routes handle it themselves.)"""
    _count_refused(request, 503)
    message = f"Redis is unavailable (keys and usage live there: {reason(exc)}); retry shortly"
    response = error_response(503, message, "api_error", {"retry-after": "1"}, openai_path(request.url.path))
    return traced(request, response)


EXCEPTION_HANDLERS = {
    InvalidRequest: on_invalid_request,
    DispatchFailed: on_dispatch_failed,
    HTTPException: on_http_exception,
    RedisError: on_redis_unavailable,
    Exception: on_unexpected,
}
