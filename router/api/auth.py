"""Who is asking: team keys at the edge, and the admin token for /admin/*.

A team key is accepted from `x-ccgate-key`, `x-api-key` or `Authorization: Bearer`; the first
lets a developer keep their own Anthropic credentials in the other two for the cloud fallback
(Claude Code: `ANTHROPIC_CUSTOM_HEADERS="x-ccgate-key: ccg-..."`). A team key never goes
upstream: every header that holds one, whatever its name and however many there are, is taken
out of what backends see.

A refusal is a 403 with `x-should-retry: false`: every agent shows it to the person at once
(Claude Code retries a 401 silently for minutes; measured with the CLIs, see docs).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable
from urllib.parse import unquote_plus

from litestar import Request, Response

from router.api.errors import NO_RETRY, error_response
from router.config import Settings
from router.gateway import Gateway
from router.policy.identity import Identity, Limits
from router.policy.schema import Policy
from router.state.keys import KEY_PREFIX, KeysUnavailable

TEAM_KEY_HEADER = "x-ccgate-key"
MISSING = (
    "ccgate: this gateway needs a team key: send it as x-api-key, Authorization: Bearer, or x-ccgate-key "
    "(your admin makes one with `ccgate keys add NAME --team TEAM`)"
)
UNKNOWN = (
    "ccgate: unknown team key: check the key you were given (it starts with ccg-), or ask your admin "
    "for one (`ccgate keys add NAME --team TEAM`)"
)


class Refused(Exception):
    """The request carries no usable team key (or its key cannot be checked now: 529);
    `response()` says why, in the caller's dialect."""

    def __init__(self, message: str, status: int = 403, reason: str = "unknown key", key: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason  # for the log line: missing key, unknown key, revoked key, keys unavailable
        self.key = key  # the key's name, when it has one (revoked)

    def response(self, openai: bool = False) -> Response:
        if self.status == 529:  # the gateway's word for "not now": clients retry it
            return error_response(529, self.message, "overloaded_error", {"retry-after": "1"}, openai=openai)
        return error_response(self.status, self.message, "permission_error", NO_RETRY, openai=openai)


def auth_mode(settings: Settings, policy: Policy) -> str:
    return settings.auth or policy.auth or "open"


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, dict[str, str]]:
    """The team key a request carries (x-ccgate-key, else x-api-key, else a bearer token), and
    the headers backends may see: none that holds a team key anywhere in its value, none named
    x-ccgate-key, the first of each name (lower-cased) for the rest."""
    found: dict[str, str] = {}
    passed: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = _text(raw_value)
        if name == TEAM_KEY_HEADER or KEY_PREFIX in value or _basic_holds_a_key(name, value):
            found.setdefault(name, value.strip())
        elif name in passed:  # a repeated header is one list (anthropic-beta: a, b), as HTTP reads it
            passed[name] = f"{passed[name]}, {value}"
        else:
            passed[name] = value
    key = found.get(TEAM_KEY_HEADER) or None
    if key is None and found.get("x-api-key", "").startswith(KEY_PREFIX):
        key = found["x-api-key"]
    if key is None:
        scheme, _, token = found.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip().startswith(KEY_PREFIX):
            key = token.strip()
    return key, passed


def upstream_query(query: str) -> str:
    """The client's query string without any parameter that holds a team key."""
    return "&".join(part for part in query.split("&") if part and KEY_PREFIX not in unquote_plus(part))


def _text(value: bytes) -> str:
    """A header value as the client meant it: UTF-8 if it is that, else its bytes as latin-1."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _basic_holds_a_key(name: str, value: str) -> bool:
    """Authorization: Basic base64(user:ccg-...): a team key too, though not one ccgate takes."""
    scheme, _, token = value.partition(" ")
    if name != "authorization" or scheme.lower() != "basic":
        return False
    try:
        return KEY_PREFIX in base64.b64decode(token.strip() + "==").decode("latin-1")
    except (binascii.Error, ValueError):
        return False


async def identify(request: Request) -> tuple[Identity | None, dict[str, str]]:
    """The caller's identity (None with auth open) and the headers to pass on; Refused when the
    gateway needs a key and the request has no good one."""
    gateway: Gateway = request.app.state.gateway
    settings: Settings = request.app.state.settings
    key, headers = presented_key(request.scope["headers"])
    if auth_mode(settings, gateway.policy) != "keys" or gateway.keys is None:
        return None, headers
    if key is None:
        raise Refused(MISSING, reason="no team key")
    try:
        record = await gateway.keys.lookup(key)
    except KeysUnavailable as exc:
        raise Refused(f"{exc}; retry shortly", status=529, reason="keys unavailable") from None
    if record is None:
        raise Refused(UNKNOWN, reason="unknown key")
    if record.revoked:
        raise Refused(
            f"the team key {record.name!r} was revoked: ask your admin for a new one",
            reason="revoked key",
            key=record.name,
        )
    team = gateway.policy.teams.get(record.team, Limits())
    return Identity(record.name, record.team, record.limits.over(team)), headers


def credential_warnings(settings: Settings, policy: Policy) -> list[str]:
    """What a team should hear at start-up, in /readyz and from the doctor: a backend that sends
    each client's own credentials gets none from a request whose only credential is its team key."""
    if auth_mode(settings, policy) != "keys":
        return []
    return [
        f"backend {name} has no api_key: a request whose only credential is its team key cannot use it "
        "(such a request gets a 403 saying so when nothing else can take it); set its api_key "
        "(api_key: ${ANTHROPIC_API_KEY}), or have developers send their own key as x-api-key and the team key "
        "as x-ccgate-key"
        for name, config in policy.backends.items()
        if config.needs_client_credentials
    ]


def admin_refusal(request: Request) -> Response | None:
    """None when the request may use /admin/*: it carries CCGATE_ADMIN_TOKEN (the only thing
    that opens it), or no token is set and the gateway is open (one developer's own process)."""
    settings: Settings = request.app.state.settings
    gateway: Gateway = request.app.state.gateway
    if not settings.admin_token:
        if auth_mode(settings, gateway.policy) == "open":
            return None
        return error_response(403, "/admin/ is closed: set CCGATE_ADMIN_TOKEN to open it", "permission_error")
    if _bearer_is(request, settings.admin_token):
        return None
    return error_response(401, "/admin/ needs the admin token (Authorization: Bearer ...)", "authentication_error")


def metrics_refusal(request: Request) -> Response | None:
    """None when the request may read /metrics: open with auth open (unless CCGATE_METRICS_TOKEN is
    set); else it carries CCGATE_METRICS_TOKEN or CCGATE_ADMIN_TOKEN as a bearer token. Every
    team's token counts are in there: a key of a team does not open it."""
    settings: Settings = request.app.state.settings
    gateway: Gateway = request.app.state.gateway
    tokens = [t for t in (settings.metrics_token, settings.admin_token) if t]
    if not settings.metrics_token and auth_mode(settings, gateway.policy) == "open":
        return None
    if not tokens:
        message = "/metrics is closed: set CCGATE_METRICS_TOKEN and have the scraper send it as a bearer token"
        return error_response(403, message, "permission_error")
    if any(_bearer_is(request, token) for token in tokens):
        return None
    message = "/metrics needs a bearer token: CCGATE_METRICS_TOKEN (Prometheus: authorization.credentials_file)"
    return error_response(401, message, "authentication_error", {"www-authenticate": 'Bearer realm="ccgate"'})


def _bearer_is(request: Request, token: str) -> bool:
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
