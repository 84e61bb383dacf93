"""The Anthropic Messages dialect: /v1/messages, /v1/messages/count_tokens; and /v1/models,
answered in the shape of whoever asks."""

from __future__ import annotations

import asyncio

from litestar import Request, Response, get, post
from litestar.response import Stream

from router.api.auth import Refused, identify
from router.api.dialects import ANTHROPIC
from router.api.ingress import handle
from router.gateway import Gateway
from router.protocol.anthropic import CountTokensRequest, MessagesRequest


@post("/v1/messages", status_code=200)
async def create_message(request: Request) -> Response | Stream:
    return await handle(request, ANTHROPIC, MessagesRequest, "messages")


@post("/v1/messages/count_tokens", status_code=200)
async def count_tokens(request: Request) -> Response | Stream:
    return await handle(request, ANTHROPIC, CountTokensRequest, "count_tokens")


@get("/v1/models")
async def list_models(request: Request) -> Response[dict] | dict:
    """The models the policy's backends serve: configured names, else what each server lists.

    Anthropic clients (they send `anthropic-version`) get Anthropic's page shape; everyone else
    OpenAI's list, which also carries Anthropic's paging fields so a plain reader of either works."""
    anthropic = "anthropic-version" in request.headers
    try:
        await identify(request)
    except Refused as refused:
        return refused.response(openai=not anthropic)
    gateway: Gateway = request.app.state.gateway
    listed = await asyncio.gather(*(b.models() for b in gateway.backends.values()))
    names = list(dict.fromkeys(name for names in listed for name in names))
    paging = {"has_more": False, "first_id": names[0] if names else None, "last_id": names[-1] if names else None}
    if anthropic:
        data = [{"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"} for n in names]
        return {"data": data, **paging}
    data = [{"id": n, "object": "model", "created": 0, "owned_by": "ccgate"} for n in names]
    return {"object": "list", "data": data, **paging}
