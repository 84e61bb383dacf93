"""The policy file's shape. Unknown keys are errors: a typo must not be silently ignored."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from router.config import BackendConfig
from router.policy.identity import Limits
from router.policy.transforms import Transform

Pick = Literal["affinity", "least_busy", "round_robin"]


class Rule(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    name: str
    # Targets in order; a nested list is a pool of equals whose order `pick` decides per request:
    # `to: [[llama_a, llama_b], cloud]`.
    to: list[str | list[str]]
    when: dict[str, Any] | None = None  # compiled by policy/conditions.py; absent: always
    transform: Transform | None = None  # applied to the request before it goes to any target
    # affinity: the backend and llama.cpp slot holding the longest prefix of the prompt, else
    # the least busy; least_busy: fewest requests in progress; round_robin: in turn.
    pick: Pick = "affinity"

    @property
    def targets(self) -> list[str]:
        """Every target name, pools flattened, in order."""
        return [name for item in self.to for name in ([item] if isinstance(item, str) else item)]

    @property
    def groups(self) -> list[list[str]]:
        return [[item] if isinstance(item, str) else list(item) for item in self.to]


FailureKind = Literal["connect", "timeout", "5xx", "429", "529", "context", "broken", "tool_call", "runaway"]
ALL_FAILURES: tuple[FailureKind, ...] = (
    "connect",
    "timeout",
    "5xx",
    "429",
    "529",
    "context",
    "broken",
    "tool_call",
    "runaway",
)


class Fallback(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Which failures before the first byte move a request to the rule's next target.

    connect: refused / unreachable; timeout: no first byte in time; 5xx, 429, 529: those
    answers; context: llama.cpp's exceed_context_size_error; broken: the backend took the
    request and broke off, or answered something unusable; tool_call: the tool guard rejected
    a call (unreadable, unknown tool, arguments against the schema); runaway: the runaway guard
    stopped an answer that repeated itself before any of it went out.
    """

    on: list[FailureKind] = msgspec.field(default_factory=lambda: list(ALL_FAILURES))


class State(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Where replicas share state. REDIS_URL in the environment wins over `redis_url` here."""

    redis_url: str | None = None
    key_prefix: str = "ccgate:"


AuthMode = Literal["keys", "open"]


class Price(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Dollars per million tokens of a model, for the usage report."""

    input: float = 0.0
    output: float = 0.0
    # Unset, priced as Anthropic bills them against input: cache reads a tenth, 5-minute cache
    # writes 1.25 times, 1-hour ones twice.
    cached: float | None = None  # prompt tokens read from the provider's cache
    cache_write: float | None = None
    cache_write_1h: float | None = None

    def per_million(self, kind: str) -> float:
        """Dollars per million tokens of one usage kind."""
        share = {"cached": 0.1, "cache_write": 1.25, "cache_write_1h": 2.0}
        if kind in share:
            said = getattr(self, kind)
            return said if said is not None else share[kind] * self.input
        return float(getattr(self, kind, 0.0))


class Policy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    backends: dict[str, BackendConfig]
    rules: list[Rule]
    fallback: Fallback = Fallback()
    state: State = State()
    # keys: every request needs a team key (`ccgate keys add`); open: anyone who can reach the
    # gateway uses it. CCGATE_AUTH wins over this; default open, refused off loopback.
    auth: AuthMode | None = None
    # Teams and their limits, for those who keep them in git; a key's own limits win over its team's.
    teams: dict[str, Limits] = msgspec.field(default_factory=dict)
    # Prices of models by glob on the name the backend answered with (first match wins), so that
    # `ccgate usage` and /admin/usage report cloud cost in dollars: {"claude-sonnet-4*": {...}}.
    prices: dict[str, Price] = msgspec.field(default_factory=dict)
