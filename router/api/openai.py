"""The OpenAI dialects: Chat Completions (Opencode, Crush, Qwen Code) and Responses (Codex CLI).
Both are converted once into the canonical request and routed like any other (api/dialects.py)."""

from __future__ import annotations

from litestar import Request, Response, post
from litestar.response import Stream

from router.api.dialects import CHAT, RESPONSES
from router.api.ingress import handle
from router.protocol.anthropic import MessagesRequest


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request) -> Response | Stream:
    return await handle(request, CHAT, MessagesRequest, "messages")


@post("/v1/responses", status_code=200)
async def responses(request: Request) -> Response | Stream:
    return await handle(request, RESPONSES, MessagesRequest, "messages")
