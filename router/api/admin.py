"""Operator endpoints: `POST /admin/explain` shows where a request would go now, and why."""

from __future__ import annotations

from litestar import Request, post

from router.gateway import Gateway
from router.policy.explain import explain
from router.policy.features import features_of
from router.protocol.anthropic import MessagesRequest, decode_body, validate


@post("/admin/explain", status_code=200)
async def admin_explain(request: Request) -> dict:
    raw = decode_body(await request.body())
    parsed = validate(raw, MessagesRequest)
    gateway: Gateway = request.app.state.gateway
    return explain(gateway.engine, features_of(parsed, raw, request.headers), gateway.snapshot())
