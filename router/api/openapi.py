"""ccgate's OpenAPI document, served at GET /openapi.json, generated from msgspec types: the
canonical Messages request (protocol/anthropic.py) and the shapes in api/schemas.py, rendered by
`msgspec.json.schema_components`. What is listed per route is what the gateway answers there:
every status, each error in its dialect's shape. Routes outside the API proper (/metrics, the
probes, /admin/*) are listed too, with the credentials each needs.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec
from litestar import get

from router import __version__
from router.api import schemas
from router.protocol.anthropic import CountTokensRequest, MessagesRequest

TYPES = (
    MessagesRequest,
    CountTokensRequest,
    schemas.ChatRequest,
    schemas.ResponsesRequest,
    schemas.AnthropicMessage,
    schemas.ChatCompletion,
    schemas.ResponseObject,
    schemas.TokenCount,
    schemas.AnthropicError,
    schemas.OpenAIError,
    schemas.ModelList,
    schemas.Health,
    schemas.Readiness,
    schemas.Index,
    schemas.NewKey,
    schemas.MadeKey,
    schemas.KeyList,
    schemas.RevokedKey,
    schemas.UsageReport,
    schemas.Explanation,
)
REF = "#/components/schemas/{name}"

# What the model routes answer besides 200 (each in the caller's dialect)
ERRORS = {
    400: "the body is not a valid request (the message names the field), or the prompt is too long for every backend",
    401: "an upstream refused the credentials the client sent through (passthrough)",
    403: "a team key is needed, unknown, revoked, or may not use the rule's backends",
    404: "no such path",
    405: "the method is not allowed on this path",
    413: "the body is over CCGATE_MAX_BODY_BYTES",
    429: "a key's limit (retry-after in seconds; anthropic-ratelimit-*-reset as an RFC 3339 time)",
    500: "an error inside the gateway (a bug: the message names its type)",
    502: "the backend failed or answered something unusable",
    504: "no first byte in time",
    529: "no backend can take the request now (retry-after)",
}
ADMIN_ERRORS = {
    400: "the body or a parameter is not valid (the message says which)",
    401: "the admin token is needed (Authorization: Bearer ...)",
    403: "/admin/ is closed: CCGATE_ADMIN_TOKEN is not set",
    404: "no such key, or team keys are off (CCGATE_AUTH=keys with REDIS_URL)",
    503: "Redis, where keys and usage live, is unavailable (retry-after)",
}
TEAM_KEY = [{"teamKey": []}, {"bearer": []}, {"ccgateKey": []}, {}]  # {}: open mode
ADMIN = [{"adminToken": []}]


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": REF.format(name=kind.__name__)}


def _json(kind: type | dict[str, Any]) -> dict[str, Any]:
    schema = kind if isinstance(kind, dict) else _ref(kind)
    return {"content": {"application/json": {"schema": schema}}}


def _errors(statuses: dict[int, str], shape: type) -> dict[str, Any]:
    return {str(status): {"description": why, **_json(shape)} for status, why in statuses.items()}


def _model_call(summary: str, request: type, answer: type, error: type) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": TEAM_KEY,
            "requestBody": {"required": True, **_json(request)},
            "responses": {
                "200": {
                    "description": "the answer (JSON), or its server-sent events when `stream` is true",
                    "content": {
                        "application/json": {"schema": _ref(answer)},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_errors(ERRORS, error),
            },
        }
    }


def _admin(method: str, summary: str, answer: type, status: int = 200, **extra: Any) -> dict[str, Any]:
    errors = ADMIN_ERRORS | ({413: ERRORS[413]} if "requestBody" in extra else {})
    return {
        method: {
            "summary": summary,
            "security": ADMIN,
            "responses": {
                str(status): {"description": "ok", **_json(answer)},
                **_errors(errors, schemas.AnthropicError),
            },
            **extra,
        }
    }


def _with_405(paths: dict[str, Any]) -> dict[str, Any]:
    """Any other method on a route: 405, in the route's dialect."""
    for path, operations in paths.items():
        shape = schemas.OpenAIError if path in ("/v1/chat/completions", "/v1/responses") else schemas.AnthropicError
        for operation in operations.values():
            operation["responses"].setdefault("405", {"description": ERRORS[405], **_json(shape)})
    return paths


@cache
def document() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(TYPES, ref_template=REF)
    count_errors = {s: w for s, w in ERRORS.items() if s not in (429, 502, 504)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ccgate",
            "version": __version__,
            "description": "A gateway between coding agents and model backends. Every answer carries "
            "x-ccgate-trace-id, the trace (and log line) of its request.",
        },
        "paths": _with_405(
            {
                "/v1/messages": _model_call(
                    "Anthropic Messages", MessagesRequest, schemas.AnthropicMessage, schemas.AnthropicError
                ),
                "/v1/chat/completions": _model_call(
                    "OpenAI Chat Completions", schemas.ChatRequest, schemas.ChatCompletion, schemas.OpenAIError
                ),
                "/v1/responses": _model_call(
                    "OpenAI Responses (stateless)",
                    schemas.ResponsesRequest,
                    schemas.ResponseObject,
                    schemas.OpenAIError,
                ),
                "/v1/messages/count_tokens": {
                    "post": {
                        "summary": "Count a request's input tokens",
                        "security": TEAM_KEY,
                        "requestBody": {"required": True, **_json(CountTokensRequest)},
                        "responses": {
                            "200": {"description": "the count", **_json(schemas.TokenCount)},
                            **_errors(count_errors | {529: ERRORS[529]}, schemas.AnthropicError),
                        },
                    }
                },
                "/v1/models": {
                    "get": {
                        "summary": "The models the backends serve",
                        "security": TEAM_KEY,
                        "responses": {
                            "200": {"description": "the list", **_json(schemas.ModelList)},
                            "403": {"description": ERRORS[403], **_json(schemas.AnthropicError)},
                            "529": {
                                "description": "Redis, where team keys live, is unavailable",
                                **_json(schemas.AnthropicError),
                            },
                        },
                    }
                },
                "/": {
                    "get": {
                        "summary": "What this is",
                        "responses": {"200": {"description": "ok", **_json(schemas.Index)}},
                    },
                    "head": {
                        "summary": "Reachable (Claude Code sends it first)",
                        "responses": {"200": {"description": "ok"}},
                    },
                },
                "/healthz": {
                    "get": {
                        "summary": "The process is alive",
                        "responses": {"200": {"description": "ok", **_json(schemas.Health)}},
                    }
                },
                "/readyz": {
                    "get": {
                        "summary": "A backend can take requests (503 when none can, or while draining)",
                        "responses": {
                            "200": {"description": "ready", **_json(schemas.Readiness)},
                            "503": {"description": "not ready, or draining", **_json(schemas.Readiness)},
                        },
                    }
                },
                "/metrics": {
                    "get": {
                        "summary": "Prometheus text exposition (every worker's)",
                        "description": "Needs CCGATE_METRICS_TOKEN or the admin token as a Bearer token in keys "
                        "mode, or whenever CCGATE_METRICS_TOKEN is set.",
                        "security": [{"metricsToken": []}, {"adminToken": []}, {}],
                        "responses": {
                            "200": {
                                "description": "the metrics",
                                "content": {"text/plain": {"schema": {"type": "string"}}},
                            },
                            "401": {"description": "a token is needed", **_json(schemas.AnthropicError)},
                            "403": {"description": "the token is wrong", **_json(schemas.AnthropicError)},
                        },
                    }
                },
                "/openapi.json": {
                    "get": {
                        "summary": "This document",
                        "responses": {"200": {"description": "ok", **_json({"type": "object"})}},
                    }
                },
                "/admin/explain": _admin(
                    "post",
                    "Where a request would go now, and why (its body: any dialect, or ?dialect=)",
                    schemas.Explanation,
                    requestBody={"required": True, **_json(MessagesRequest)},
                    parameters=[
                        {
                            "name": "dialect",
                            "in": "query",
                            "required": False,
                            "schema": {"enum": ["anthropic", "chat", "responses"]},
                        }
                    ],
                ),
                "/admin/keys": {
                    **_admin("get", "Every team key (never its hash)", schemas.KeyList),
                    **_admin(
                        "post",
                        "Make a key; the answer is the only place it is shown",
                        schemas.MadeKey,
                        201,
                        requestBody={"required": True, **_json(schemas.NewKey)},
                    ),
                },
                "/admin/keys/{name}": _admin(
                    "delete",
                    "Revoke a key (every replica refuses it within a second)",
                    schemas.RevokedKey,
                    parameters=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                ),
                "/admin/usage": _admin(
                    "get",
                    "Tokens per key, team, backend or model: local share, cloud cost",
                    schemas.UsageReport,
                    parameters=[
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "default": "7d"},
                        },
                        {
                            "name": "by",
                            "in": "query",
                            "required": False,
                            "schema": {"enum": ["key", "team", "backend", "model"], "default": "key"},
                        },
                    ],
                ),
            }
        ),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "teamKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "a team key as a Bearer token"},
                "ccgateKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-ccgate-key",
                    "description": "the team key beside the client's own upstream credentials",
                },
                "adminToken": {"type": "http", "scheme": "bearer", "description": "CCGATE_ADMIN_TOKEN"},
                "metricsToken": {"type": "http", "scheme": "bearer", "description": "CCGATE_METRICS_TOKEN"},
            },
        },
    }


@get("/openapi.json", include_in_schema=False)
async def openapi_document() -> dict[str, Any]:
    return document()
