"""Operator endpoints, behind CCGATE_ADMIN_TOKEN: where a request would go now and why
(`POST /admin/explain`), team keys (`/admin/keys`), usage (`GET /admin/usage`)."""

from __future__ import annotations

import msgspec
from litestar import Request, Response, delete, get, post

from router.admission import limits_problem, local_backends
from router.api.auth import admin_refusal
from router.api.dialects import BY_NAME, dialect_for
from router.api.errors import error_response
from router.api.schemas import NewKey
from router.gateway import Gateway
from router.policy.explain import explain
from router.policy.features import features_of
from router.protocol.anthropic import InvalidRequest, MessagesRequest, decode_body, validate
from router.state.accounting import MAX_DAYS, USAGE_BY, last_days, summarize, usage_days
from router.state.keys import KeyProblem


@post("/admin/explain", status_code=200)
async def admin_explain(request: Request) -> Response | dict:
    if (refused := admin_refusal(request)) is not None:
        return refused
    body = await request.body()
    # ?dialect=chat|responses|anthropic, else told from the body's shape
    dialect = BY_NAME.get(request.query_params.get("dialect", "")) or dialect_for(None, decode_body(body))
    parsed = dialect.parse(body)
    canonical = validate(parsed.canonical, MessagesRequest)
    gateway: Gateway = request.app.state.gateway
    features = features_of(canonical, parsed.canonical, request.headers)
    return explain(gateway.engine, features, gateway.snapshot(), dialect.name, parsed.dropped_tools)


@get("/admin/keys")
async def list_keys(request: Request) -> Response | dict:
    if (refused := admin_refusal(request)) is not None:
        return refused
    gateway: Gateway = request.app.state.gateway
    if gateway.keys is None:
        return _no_keys()
    return {"keys": [r.public() for r in await gateway.keys.records()]}


@post("/admin/keys", status_code=201)
async def add_key(request: Request) -> Response | dict:
    if (refused := admin_refusal(request)) is not None:
        return refused
    gateway: Gateway = request.app.state.gateway
    if gateway.keys is None:
        return _no_keys()
    try:
        wanted = msgspec.convert(decode_body(await request.body()), NewKey)
        if problem := limits_problem(wanted.limits, gateway.policy.backends):
            return error_response(400, problem)
        key = await gateway.keys.add(wanted.name, wanted.team, wanted.limits)
    except msgspec.ValidationError as exc:
        return error_response(400, str(exc))
    except (InvalidRequest, KeyProblem) as exc:
        return error_response(400, str(exc))
    return {"name": wanted.name, "team": wanted.team, "key": key}


@delete("/admin/keys/{name:str}", status_code=200)
async def revoke_key(request: Request, name: str) -> Response | dict:
    if (refused := admin_refusal(request)) is not None:
        return refused
    gateway: Gateway = request.app.state.gateway
    if gateway.keys is None:
        return _no_keys()
    try:
        record = await gateway.keys.revoke(name)
    except KeyProblem as exc:
        return error_response(404, str(exc))
    return {"name": record.name, "team": record.team, "revoked": record.revoked}


@get("/admin/usage")
async def usage(request: Request, since: str = "7d", by: str = "key") -> Response | dict:
    if (refused := admin_refusal(request)) is not None:
        return refused
    gateway: Gateway = request.app.state.gateway
    if gateway.accounting is None:
        return _no_keys()
    days = usage_days(since)
    if by not in USAGE_BY or days is None:
        return error_response(400, f"expected since=Nd, N from 1 to {MAX_DAYS} (e.g. 7d), and by={'|'.join(USAGE_BY)}")
    rows = await gateway.accounting.usage(last_days(days))
    policy = gateway.policy
    return {"since": f"{days}d", "by": by, "usage": summarize(rows, by, local_backends(policy), policy.prices)}


def _no_keys() -> Response:
    return error_response(404, "team keys are off: start ccgate with CCGATE_AUTH=keys and REDIS_URL", "not_found_error")
