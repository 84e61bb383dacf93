"""What the policy can ask about a request: computed once, cheaply, from the canonical request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from router.policy.identity import Identity
from router.protocol.anthropic import CountTokensRequest, MessagesRequest
from router.protocol.estimate import estimate_input_tokens

# User-Agent prefixes of the clients the policy can tell apart.
CLIENT_KINDS = (
    ("claude-cli/", "claude-cli"),
    ("opencode/", "opencode"),
    ("crush/", "crush"),
    ("codex_", "codex"),  # codex_exec/0.169.0, codex_cli_rs/...
    ("qwencode/", "qwen-code"),
    ("anthropic/", "sdk"),
    ("openai/", "sdk"),
)


@dataclass(frozen=True, slots=True)
class Features:
    tokens: int
    model: str
    tool_count: int = 0
    tool_names: frozenset[str] = frozenset()
    thinking: bool = False
    images: bool = False
    max_tokens: int = 0
    client: str = "other"
    headers: Mapping[str, str] = field(default_factory=dict)
    team: str | None = None  # the team of the request's key (conditions may name it)
    identity: Identity | None = None  # who sent it (team keys); None with auth open
    local_in_flight: int = 0  # this identity's requests now on local backends, every replica's
    # A count_tokens request: it only tokenizes, so neither a context window nor a busy slot
    # stands in its way.
    counting: bool = False
    # It carries credentials of its own for an upstream (x-api-key or Authorization that is not
    # a team key): a backend that sends the client's credentials has something to send.
    client_credentials: bool = False


def client_kind(user_agent: str) -> str:
    agent = user_agent.lower()
    for prefix, kind in CLIENT_KINDS:
        if agent.startswith(prefix):
            return kind
    if "stainless" in agent or "python/" in agent:
        return "sdk"
    return "other"


def features_of(
    request: MessagesRequest | CountTokensRequest,
    raw: dict[str, Any],
    headers: Mapping[str, str],
    body_size: int | None = None,
) -> Features:
    tools = request.tools or []
    thinking = request.thinking or {}
    return Features(
        tokens=estimate_input_tokens(raw, body_size),
        model=request.model,
        tool_count=len(tools),
        tool_names=frozenset(t.get("name", "") for t in tools),
        thinking=thinking.get("type") in ("enabled", "adaptive"),
        images=_has_images(request),
        max_tokens=getattr(request, "max_tokens", 0),
        client=client_kind(headers.get("user-agent", "")),
        headers={k.lower(): v for k, v in headers.items()},
        counting=isinstance(request, CountTokensRequest),
        client_credentials=bool(headers.get("x-api-key") or headers.get("authorization")),
    )


def _has_images(request: MessagesRequest | CountTokensRequest) -> bool:
    for message in request.messages:
        if isinstance(message.content, list):
            for block in message.content:
                if block.get("type") == "image":
                    return True
                nested = block.get("content") if block.get("type") == "tool_result" else None
                if isinstance(nested, list) and any(isinstance(b, dict) and b.get("type") == "image" for b in nested):
                    return True
    return False
