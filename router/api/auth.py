"""Who is asking: team keys at the edge, and the admin token for /admin/*.

A team key is accepted from `x-ccgate-key`, `x-api-key` or `Authorization: Bearer`; the first
lets a developer keep their own Anthropic credentials in the other two for the cloud fallback
(Claude Code: `ANTHROPIC_CUSTOM_HEADERS="x-ccgate-key: ccg-..."`). A team key never goes
upstream: the headers that carried it are taken out of what backends see.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from litestar import Request, Response

from router.api.errors import error_response
from router.gateway import Gateway
from router.policy.identity import Identity, Limits
from router.policy.schema import Policy
from router.settings import Settings
from router.state.keys import KEY_PREFIX, KeysUnavailable

TEAM_KEY_HEADER = "x-ccgate-key"
MISSING = (
    "this gateway needs a team key: send it as x-api-key, Authorization: Bearer, or x-ccgate-key "
    "(your admin makes one with `ccgate keys add NAME --team TEAM`)"
)


class Refused(Exception):
    """The request carries no usable team key (or its key cannot be checked now: 529);
    `response()` says why, in the caller's dialect."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self, openai: bool = False) -> Response:
        if self.status == 529:  # the gateway's word for "not now": clients retry it
            return error_response(529, self.message, "overloaded_error", {"retry-after": "1"}, openai=openai)
        return error_response(self.status, self.message, "authentication_error", openai=openai)


def auth_mode(settings: Settings, policy: Policy) -> str:
    return settings.auth or policy.auth or "open"


def presented_key(headers: Mapping[str, str]) -> tuple[str | None, frozenset[str]]:
    """The team key a request carries, and the headers that carried one (never forwarded)."""
    explicit = headers.get(TEAM_KEY_HEADER)
    if explicit:
        return explicit.strip(), frozenset({TEAM_KEY_HEADER})
    api_key = (headers.get("x-api-key") or "").strip()
    if api_key.startswith(KEY_PREFIX):
        return api_key, frozenset({"x-api-key"})
    authorization = (headers.get("authorization") or "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip().startswith(KEY_PREFIX):
        return token.strip(), frozenset({"authorization"})
    return None, frozenset()


def upstream_headers(headers: Mapping[str, str], carried: frozenset[str]) -> dict[str, str]:
    """What the backends may see of the client's headers: everything but the team key."""
    return {k.lower(): v for k, v in headers.items() if k.lower() not in carried and k.lower() != TEAM_KEY_HEADER}


async def identify(request: Request) -> tuple[Identity | None, dict[str, str]]:
    """The caller's identity (None with auth open) and the headers to pass on; Refused when the
    gateway needs a key and the request has no good one."""
    gateway: Gateway = request.app.state.gateway
    settings: Settings = request.app.state.settings
    key, carried = presented_key(request.headers)
    headers = upstream_headers(request.headers, carried)
    if auth_mode(settings, gateway.policy) != "keys" or gateway.keys is None:
        return None, headers
    if key is None:
        raise Refused(MISSING)
    try:
        record = await gateway.keys.lookup(key)
    except KeysUnavailable as exc:
        raise Refused(f"{exc}; retry shortly", status=529) from None
    if record is None:
        raise Refused("unknown team key")
    if record.revoked:
        raise Refused(f"the team key {record.name!r} was revoked")
    team = gateway.policy.teams.get(record.team, Limits())
    return Identity(record.name, record.team, record.limits.over(team)), headers


def admin_refusal(request: Request) -> Response | None:
    """None when the request may use /admin/*: it carries CCGATE_ADMIN_TOKEN (the only thing
    that opens it), or no token is set and the gateway is open (one developer's own process)."""
    settings: Settings = request.app.state.settings
    gateway: Gateway = request.app.state.gateway
    if not settings.admin_token:
        if auth_mode(settings, gateway.policy) == "open":
            return None
        return error_response(403, "/admin/ is closed: set CCGATE_ADMIN_TOKEN to open it", "permission_error")
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), settings.admin_token.encode()):
        return None
    return error_response(401, "/admin/ needs the admin token (Authorization: Bearer ...)", "authentication_error")
