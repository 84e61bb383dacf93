"""The policy file's shape. Unknown keys are errors: a typo must not be silently ignored."""

from __future__ import annotations

from typing import Literal

import msgspec

Kind = Literal["llamacpp", "openai", "anthropic"]
Dialect = Literal["anthropic", "openai"]
Auth = Literal["auto", "key", "passthrough", "none"]

DEFAULT_DIALECT: dict[str, Dialect] = {"llamacpp": "anthropic", "openai": "openai", "anthropic": "anthropic"}


class Timeouts(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Seconds. `first_byte` covers prompt processing, which takes minutes for a cold 20k prompt on CPU."""

    connect: float = 5.0
    first_byte: float = 600.0
    idle: float = 300.0


class BackendConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    kind: Kind
    url: str
    dialect: Dialect | None = None
    model: str | None = None  # model name sent upstream; None keeps the client's
    api_key: str | None = None
    # auto: api_key when set, else the client's own credentials; key: api_key only;
    # passthrough: always the client's; none: send no credentials. Default: auto for the
    # Anthropic API, key for everything else, so a client's Anthropic token never reaches a
    # server that was not meant to see it.
    auth: Auth | None = None
    health_path: str | None = None
    timeouts: Timeouts = Timeouts()

    @property
    def effective_auth(self) -> Auth:
        return self.auth or ("auto" if self.kind == "anthropic" else "key")

    @property
    def wire_dialect(self) -> Dialect:
        return self.dialect or DEFAULT_DIALECT[self.kind]


class Rule(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    name: str
    to: list[str]


class Policy(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    backends: dict[str, BackendConfig]
    rules: list[Rule]
