"""Error bodies in each client dialect."""

from __future__ import annotations

from typing import Any

import msgspec


class BadUpstreamResponse(ValueError):
    """The backend answered something that is not a valid response of its dialect."""


# Anthropic's documented error types by HTTP status.
ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


KNOWN_TYPES = frozenset(ANTHROPIC_ERROR_TYPES.values()) | {"billing_error"}


def anthropic_error_type(status: int) -> str:
    if status in ANTHROPIC_ERROR_TYPES:
        return ANTHROPIC_ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def anthropic_error_body(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {
            "type": error_type if error_type in KNOWN_TYPES else anthropic_error_type(status),
            "message": message,
        },
    }


# OpenAI's error types by HTTP status; `code` carries the finer kind (the Anthropic-style type).
OPENAI_ERROR_TYPES: dict[int, str] = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def openai_error_body(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    """`{"error": {message, type, param, code}}`, the shape the OpenAI SDKs read."""
    kind = OPENAI_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    code = error_type if error_type in KNOWN_TYPES else anthropic_error_type(status)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def anthropic_error_event(status: int, message: str, error_type: str | None = None) -> bytes:
    """An SSE `event: error` that ends an Anthropic stream after bytes were already sent."""
    data = msgspec.json.encode(anthropic_error_body(status, message, error_type))
    return b"event: error\ndata: " + data + b"\n\n"


def upstream_error_message(body: bytes) -> str | None:
    """The human message inside an upstream error body, whatever dialect it is in."""
    try:
        parsed = msgspec.json.decode(body)
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or None
    if isinstance(parsed, dict):
        err = parsed.get("error", parsed)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
    return None


def upstream_error_type(body: bytes) -> str | None:
    """The error type an upstream named (Anthropic `error.type` or llama.cpp's `error.type`)."""
    try:
        parsed = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        value = parsed["error"].get("type")
        return value if isinstance(value, str) else None
    return None


def upstream_n_ctx(body: bytes) -> int | None:
    """The context size llama.cpp names in its exceed_context_size_error, if any."""
    try:
        parsed = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    value = (
        parsed.get("error", {}).get("n_ctx")
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict)
        else None
    )
    return value if isinstance(value, int) and value > 0 else None
