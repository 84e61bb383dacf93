"""ccgate's own OpenAPI document, served at GET /openapi.json.

Written by hand rather than generated: the handlers read raw bodies (each dialect is decoded and
validated once, by msgspec, in protocol/), so there are no typed parameters to generate it from.
It says what the gateway accepts and answers, not the whole of each vendor's API: the request
schemas name the fields ccgate reads and allow the rest; every error is in its dialect's shape.
"""

from __future__ import annotations

from typing import Any

from litestar import get

from router import __version__

ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}
OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
MESSAGE = {
    "type": "object",
    "required": ["type", "content"],
    "properties": {"type": {"const": "message"}, "content": {"type": "array"}, "usage": {"type": "object"}},
}
CHAT_COMPLETION = {
    "type": "object",
    "required": ["object", "choices"],
    "properties": {"object": {"const": "chat.completion"}, "choices": {"type": "array"}, "usage": {"type": "object"}},
}
RESPONSE = {
    "type": "object",
    "required": ["object", "output", "status"],
    "properties": {"object": {"const": "response"}, "output": {"type": "array"}, "status": {"type": "string"}},
}
MESSAGES_REQUEST = {
    "type": "object",
    "required": ["model", "messages", "max_tokens"],
    "properties": {
        "model": {"type": "string"},
        "max_tokens": {"type": "integer", "minimum": 1},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": ["user", "assistant", "system"]},
                    "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
                },
            },
        },
        "system": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]},
        "tools": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "stream": {"type": "boolean"},
    },
}
CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string"},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role"],
                "properties": {"role": {"enum": ["system", "developer", "user", "assistant", "tool"]}},
            },
        },
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "tools": {"type": "array", "items": {"type": "object"}},
        "stream": {"type": "boolean"},
    },
}
RESPONSES_REQUEST = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": {"type": "string"},
        "input": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1}]},
        "instructions": {"type": "string"},
        "max_output_tokens": {"type": "integer", "minimum": 1},
        "tools": {"type": "array", "items": {"type": "object"}},
        "stream": {"type": "boolean"},
        "store": {"type": "boolean"},
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _model_call(summary: str, request: dict[str, Any], answer: dict[str, Any], error: dict[str, Any]) -> dict[str, Any]:
    errors = {str(status): {"description": why, **_json(error)} for status, why in ERRORS.items()}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, **_json(request)},
            "responses": {
                "200": {
                    "description": "the answer (JSON), or its server-sent events when `stream` is true",
                    "content": {
                        "application/json": {"schema": answer},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **errors,
            },
        }
    }


ERRORS = {
    400: "the body is not a valid request (the message names the field)",
    401: "a team key is needed, unknown or revoked",
    404: "no such path",
    413: "the body is over CCGATE_MAX_BODY_BYTES",
    429: "a key's limit (retry-after says when)",
    502: "the backend failed or answered something unusable",
    504: "no first byte in time",
    529: "no backend can take the request now (retry-after)",
}


def document() -> dict[str, Any]:
    plain = {"200": {"description": "ok", **_json({"type": "object"})}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ccgate",
            "version": __version__,
            "description": "A gateway between coding agents and model backends.",
        },
        "paths": {
            "/v1/messages": _model_call("Anthropic Messages", MESSAGES_REQUEST, MESSAGE, ANTHROPIC_ERROR),
            "/v1/chat/completions": _model_call("OpenAI Chat Completions", CHAT_REQUEST, CHAT_COMPLETION, OPENAI_ERROR),
            "/v1/responses": _model_call("OpenAI Responses (stateless)", RESPONSES_REQUEST, RESPONSE, OPENAI_ERROR),
            "/v1/messages/count_tokens": {
                "post": {
                    "summary": "Count a request's input tokens",
                    "requestBody": {"required": True, **_json({**MESSAGES_REQUEST, "required": ["model", "messages"]})},
                    "responses": {
                        "200": {
                            "description": "the count",
                            **_json(
                                {
                                    "type": "object",
                                    "required": ["input_tokens"],
                                    "properties": {"input_tokens": {"type": "integer"}},
                                }
                            ),
                        },
                        **{str(s): {"description": w, **_json(ANTHROPIC_ERROR)} for s, w in ERRORS.items()},
                    },
                }
            },
            "/v1/models": {"get": {"summary": "The models the backends serve", "responses": plain}},
            "/healthz": {"get": {"summary": "The process is alive", "responses": plain}},
            "/readyz": {
                "get": {
                    "summary": "A backend can take requests (503 when none can, or while draining)",
                    "responses": {**plain, "503": {"description": "not ready", **_json({"type": "object"})}},
                }
            },
        },
    }


@get("/openapi.json", include_in_schema=False)
async def openapi_document() -> dict[str, Any]:
    return document()
