"""The policy file's shape. Unknown keys are errors: a typo must not be silently ignored."""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any, Literal

import msgspec

from router.policy.identity import Limits
from router.policy.transforms import Transform

Kind = Literal["llamacpp", "openai", "anthropic"]
Dialect = Literal["anthropic", "openai"]
Auth = Literal["auto", "key", "passthrough", "none"]

DEFAULT_LOCAL_OUTPUT_CAP = 16384
DEFAULT_DIALECT: dict[str, Dialect] = {"llamacpp": "anthropic", "openai": "openai", "anthropic": "anthropic"}


class Timeouts(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Seconds. `first_byte` covers prompt processing, which takes minutes for a cold 20k prompt on CPU."""

    connect: float = 5.0
    first_byte: float = 600.0
    idle: float = 300.0
    total: float | None = None  # the whole answer, first byte to last; None: no limit


class Capabilities(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What a backend can take; a request needing what it lacks skips it."""

    # auto: what the model family table (policy/model_families.py) says of the model the
    # backend reports running; a family it does not know counts as able.
    tools: bool | Literal["auto"] = True
    images: bool = True
    thinking: bool = True


class Breaker(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    failures: int = 3  # consecutive failures before it opens
    cooldown: float = 10.0  # seconds before one request may try again


class SlotFiles(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """llama-server slot files (a server started with `--slot-save-path`): with more
    conversations than slots, a prefix worth keeping is saved before its slot goes to another
    conversation, and restored into a slot when that conversation returns. A server without
    `--slot-save-path` is left as it is. Measured by bench/slot_files.py."""

    # Files ccgate keeps on each server (names ccgate-<backend>-<n>.bin, reused least recently
    # used first), so its disk use stays bounded: each holds one prompt's KV cache. Default:
    # twice the server's slots. 0: never save or restore.
    files: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # The smallest prefix worth a file: shorter ones are processed again, which costs less
    # than the round trips of a save and a restore.
    min_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024

    def budget(self, slots: int | None) -> int:
        if self.files is not None:
            return self.files
        return 2 * slots if slots else 0


class BackendConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    kind: Kind
    url: str
    dialect: Dialect | None = None
    # The model name sent upstream: one name, or a map from globs on the client's model name to
    # names (first match wins, e.g. {"*haiku*": qwen3-4b, "*": qwen3-coder-30b}); None: the client's.
    model: str | dict[str, str] | None = None
    api_key: str | None = None
    # auto: api_key when set, else the client's own credentials; key: api_key only;
    # passthrough: always the client's; none: send no credentials. Default: auto for the
    # Anthropic API, key for everything else, so a client's Anthropic token never reaches a
    # server that was not meant to see it.
    auth: Auth | None = None
    health_path: str | None = None
    timeouts: Timeouts = Timeouts()
    # Busy at this many requests in progress (ours, or what llama-server reports, plus its
    # queue); default: llama-server's slot count, else never busy.
    max_concurrent: int | None = None
    # Tokens a request may have; default: llama-server's per-slot n_ctx, else no limit.
    context_window: int | None = None
    capabilities: Capabilities = Capabilities()
    breaker: Breaker = Breaker()
    # Check every tool call of this backend's answers (repair, convert calls written as text,
    # reject the rest); default on for local kinds (llamacpp, openai), off for the Anthropic API.
    # (YAML reads a bare on/off as true/false; both spellings are accepted.)
    tool_guard: bool | Literal["on", "off"] | None = None
    # Stop an answer that repeats itself or writes another family's end-of-turn markup
    # (protocol/runaway); default on for llamacpp, off for the rest.
    runaway_guard: bool | Literal["on", "off"] | None = None
    # The most output tokens a request may ask of this backend (the client's max_tokens is cut
    # to it): a 32k request must not hold a slot for an hour. Default: 16384 for llamacpp.
    max_output_tokens: int | None = None
    # How ccgate reaches it (router/backends/egress.py): a CA bundle to trust besides the
    # system's (a private CA), a client certificate (PEM; its key in it or in client_key), and
    # the proxy: env (HTTPS_PROXY / HTTP_PROXY / NO_PROXY), none, or an http:// URL.
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    proxy: str = "env"
    # Connections open to it at once (requests beyond wait for one, within timeouts.first_byte);
    # default 64 for llamacpp (more than any box has slots), 256 for the rest.
    max_connections: int | None = None
    slot_files: SlotFiles = SlotFiles()

    def upstream_model(self, requested: str) -> str:
        if self.model is None:
            return requested
        if isinstance(self.model, str):
            return self.model
        for pattern, name in self.model.items():
            if fnmatch.fnmatchcase(requested.lower(), pattern.lower()):
                return name
        return requested

    @property
    def model_names(self) -> list[str]:
        if self.model is None:
            return []
        return [self.model] if isinstance(self.model, str) else list(dict.fromkeys(self.model.values()))

    @property
    def effective_auth(self) -> Auth:
        return self.auth or ("auto" if self.kind == "anthropic" else "key")

    @property
    def needs_client_credentials(self) -> bool:
        """No key of its own, and it sends each client's: the Anthropic API refuses a request that
        brings none (in keys mode, one whose only credential was its team key)."""
        return self.kind == "anthropic" and not self.api_key and self.effective_auth in ("auto", "passthrough")

    @property
    def guards_tools(self) -> bool:
        if self.tool_guard is None:
            return self.kind != "anthropic"
        return self.tool_guard in (True, "on")

    @property
    def guards_runaways(self) -> bool:
        if self.runaway_guard is None:
            return self.kind == "llamacpp"
        return self.runaway_guard in (True, "on")

    @property
    def output_cap(self) -> int | None:
        if self.max_output_tokens is None:
            return DEFAULT_LOCAL_OUTPUT_CAP if self.kind == "llamacpp" else None
        return self.max_output_tokens or None  # 0: no cap

    @property
    def connection_limit(self) -> int:
        return self.max_connections or (64 if self.kind == "llamacpp" else 256)

    @property
    def wire_dialect(self) -> Dialect:
        return self.dialect or DEFAULT_DIALECT[self.kind]


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
