"""Every failure reaches the client as an Anthropic error body, never as a stack trace."""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.exceptions import HTTPException

from router.dispatch import DispatchFailed
from router.protocol.anthropic import InvalidRequest
from router.protocol.errors import anthropic_error_body

log = logging.getLogger("ccgate.api")

ROUTE_HEADERS = ("x-ccgate-route", "x-ccgate-fallback-reason")


def error_response(
    status: int, message: str, error_type: str | None = None, headers: dict[str, str] | None = None
) -> Response[dict]:
    return Response(anthropic_error_body(status, message, error_type), status_code=status, headers=headers)


def on_invalid_request(_: Request, exc: InvalidRequest) -> Response[dict]:
    return error_response(400, str(exc))


def on_dispatch_failed(_: Request, exc: DispatchFailed) -> Response[dict]:
    log.warning("request failed (rule %s): %d %s", exc.rule, exc.status, exc.message)
    headers = {"x-ccgate-route": exc.rule}
    if exc.fallbacks:
        headers["x-ccgate-fallback-reason"] = header_safe("; ".join(exc.fallbacks))
    if exc.status == 529:
        headers["retry-after"] = "1"
    return error_response(exc.status, exc.message, exc.error_type, headers)


def on_http_exception(request: Request, exc: HTTPException) -> Response[dict]:
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
    return error_response(status, message)


def on_unexpected(request: Request, exc: Exception) -> Response[dict]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, f"internal gateway error ({type(exc).__name__})")


def header_safe(text: str, limit: int = 512) -> str:
    return text.encode("ascii", "replace").decode()[:limit].replace("\r", " ").replace("\n", " ")


EXCEPTION_HANDLERS = {
    InvalidRequest: on_invalid_request,
    DispatchFailed: on_dispatch_failed,
    HTTPException: on_http_exception,
    Exception: on_unexpected,
}
