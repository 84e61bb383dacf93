"""The shapes the HTTP API documents, as msgspec types: /openapi.json is generated from these and
from the canonical request types (protocol/anthropic.py), not written by hand.

The model routes read raw bodies (each dialect is decoded and validated once, in protocol/), so
their request types here name the fields ccgate reads and allow the rest, as the vendors' APIs
do. Answers are described as far as ccgate shapes them; a backend's own fields pass through.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from router.policy.identity import Limits

NonEmpty = msgspec.Meta(min_length=1)
Positive = msgspec.Meta(ge=1)


class AnthropicErrorDetail(msgspec.Struct):
    type: str
    message: str


class AnthropicError(msgspec.Struct):
    """Every failure on the Anthropic routes (and /admin/*)."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class OpenAIErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(msgspec.Struct):
    """Every failure on /v1/chat/completions and /v1/responses."""

    error: OpenAIErrorDetail


class AnthropicMessage(msgspec.Struct):
    """A Messages answer (non-streamed)."""

    type: Literal["message"]
    content: list[dict[str, Any]]
    usage: dict[str, Any] = msgspec.field(default_factory=dict)


class ChatCompletion(msgspec.Struct):
    object: Literal["chat.completion"]
    choices: list[dict[str, Any]]
    usage: dict[str, Any] = msgspec.field(default_factory=dict)


class ResponseObject(msgspec.Struct):
    object: Literal["response"]
    output: list[dict[str, Any]]
    status: str


class TokenCount(msgspec.Struct):
    input_tokens: int


class ChatMessage(msgspec.Struct):
    role: Literal["system", "developer", "user", "assistant", "tool"]


class ChatRequest(msgspec.Struct):
    """OpenAI Chat Completions, as Opencode, Crush and Qwen Code send it."""

    model: str
    messages: Annotated[list[ChatMessage], NonEmpty]
    max_tokens: Annotated[int, Positive] | None = None
    max_completion_tokens: Annotated[int, Positive] | None = None
    tools: list[dict[str, Any]] | None = None
    stream: bool = False


class ResponsesRequest(msgspec.Struct):
    """OpenAI Responses, stateless (`store: false`), as Codex CLI sends it."""

    model: str
    input: Annotated[str, NonEmpty] | Annotated[list[dict[str, Any]], NonEmpty]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Positive] | None = None
    tools: list[dict[str, Any]] | None = None
    stream: bool = False
    store: bool | None = None


class Model(msgspec.Struct):
    id: str


class ModelList(msgspec.Struct):
    """OpenAI's list (`object`, `owned_by`), or Anthropic's page when `anthropic-version` is sent;
    both carry the paging fields."""

    data: list[Model]
    has_more: bool
    first_id: str | None
    last_id: str | None


class Health(msgspec.Struct):
    status: Literal["ok"]


class BackendState(msgspec.Struct):
    healthy: bool
    available: bool
    detail: str
    breaker: str
    breaker_detail: str
    queue_depth: int
    slots: int | None
    slot_files: str | None = None


class Readiness(msgspec.Struct):
    status: Literal["ready", "unavailable", "draining"]
    backends: dict[str, BackendState]
    warnings: list[str]


class Index(msgspec.Struct):
    name: str
    version: str
    api: list[str]


class NewKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /admin/keys: a key for `name` in `team`, with limits over the team's."""

    name: str
    team: str
    limits: Limits = Limits()


class MadeKey(msgspec.Struct):
    """The key itself: shown once, kept only hashed."""

    name: str
    team: str
    key: str


class KeyInfo(msgspec.Struct):
    name: str
    team: str
    limits: Limits
    created: float
    revoked: float | None = None


class KeyList(msgspec.Struct):
    keys: list[KeyInfo]


class RevokedKey(msgspec.Struct):
    name: str
    team: str
    revoked: float


class UsageReport(msgspec.Struct):
    since: str
    by: Literal["key", "team", "backend", "model"]
    usage: list[dict[str, Any]]


class Target(msgspec.Struct):
    backend: str
    eligible: bool
    reason: str
    state: dict[str, Any]


class Explanation(msgspec.Struct):
    """Where a request would go now and why: the rule, the first choice, each target's verdict."""

    rule: str | None
    backend: str | None
    candidates: list[str]
    targets: list[Target]
    features: dict[str, Any]
