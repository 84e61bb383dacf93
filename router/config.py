"""The configuration every layer reads, low in the house: the process settings (command line over
environment over defaults) and the backend config types of the policy file. api/, policy/,
backends/ and server/ import it; it imports nothing of theirs."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

DEFAULT_MAX_BODY = 32 * 1024 * 1024


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 4000
    config: str | None = None  # policy file; None: the built-in policies/default.yaml
    max_body_bytes: int = DEFAULT_MAX_BODY
    health_interval: float = 1.0  # seconds between backend health checks; 0 turns polling off
    log_level: str = "info"
    log_format: str = "auto"  # json | text | auto (json when stderr is not a terminal)
    reload_interval: float = 1.0  # seconds between checks of the policy file; 0: only on SIGHUP
    redis_url: str | None = None  # REDIS_URL: share state with other replicas; None: in memory
    auth: str | None = None  # CCGATE_AUTH: keys | open (else the policy's `auth:`, else open)
    admin_token: str | None = None  # CCGATE_ADMIN_TOKEN: the only thing that opens /admin/*
    # CCGATE_METRICS_TOKEN: what a scraper sends for /metrics (Bearer), besides the admin token;
    # /metrics needs one of them in keys mode, or whenever this is set
    metrics_token: str | None = None
    allow_open: bool = False  # CCGATE_ALLOW_OPEN / --allow-open: serve open off loopback on purpose
    # CCGATE_SHUTDOWN_GRACE: seconds requests in flight (streams included) get to finish after
    # SIGTERM; /readyz says 503 from the first moment, so a load balancer stops sending more
    shutdown_grace: float = 30.0
    # CCGATE_HEADER_TIMEOUT: seconds a connection has to send a whole request head (slowloris)
    header_timeout: float = 10.0
    # CCGATE_BODY_TIMEOUT: seconds a request's whole body may take to arrive (a gap of more than
    # CCGATE_HEADER_TIMEOUT between its pieces ends it sooner)
    body_timeout: float = 120.0
    # CCGATE_WORKER_TIMEOUT: seconds a worker's event loop may go without a tick before the
    # supervisor kills and replaces it (a hung worker answers nobody)
    worker_timeout: float = 30.0
    # CCGATE_WORKERS / --workers: processes answering on the port (router/server/workers.py)
    workers: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field, var in (
            ("host", "CCGATE_HOST"),
            ("port", "CCGATE_PORT"),
            ("config", "CCGATE_CONFIG"),
            ("max_body_bytes", "CCGATE_MAX_BODY_BYTES"),
            ("health_interval", "CCGATE_HEALTH_INTERVAL"),
            ("log_level", "CCGATE_LOG_LEVEL"),
            ("log_format", "CCGATE_LOG_FORMAT"),
            ("reload_interval", "CCGATE_RELOAD_INTERVAL"),
            ("redis_url", "REDIS_URL"),
            ("auth", "CCGATE_AUTH"),
            ("admin_token", "CCGATE_ADMIN_TOKEN"),
            ("metrics_token", "CCGATE_METRICS_TOKEN"),
            ("allow_open", "CCGATE_ALLOW_OPEN"),
            ("shutdown_grace", "CCGATE_SHUTDOWN_GRACE"),
            ("header_timeout", "CCGATE_HEADER_TIMEOUT"),
            ("body_timeout", "CCGATE_BODY_TIMEOUT"),
            ("worker_timeout", "CCGATE_WORKER_TIMEOUT"),
            ("workers", "CCGATE_WORKERS"),
        ):
            if env.get(var):
                values[field] = env[var]
        values.update({k: str(v) if k == "config" else v for k, v in overrides.items() if v is not None})
        try:
            settings = msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid setting: {exc}") from None
        if settings.shutdown_grace < 0:
            raise ValueError("invalid setting: CCGATE_SHUTDOWN_GRACE must be 0 or more seconds")
        if not 1 <= settings.workers <= 64:
            raise ValueError("invalid setting: CCGATE_WORKERS must be 1 to 64")
        if settings.header_timeout <= 0:
            raise ValueError("invalid setting: CCGATE_HEADER_TIMEOUT must be more than 0 seconds")
        if settings.body_timeout <= 0:
            raise ValueError("invalid setting: CCGATE_BODY_TIMEOUT must be more than 0 seconds")
        if settings.worker_timeout <= 0:
            raise ValueError("invalid setting: CCGATE_WORKER_TIMEOUT must be more than 0 seconds")
        return settings

    @property
    def policy_path(self) -> Path | None:
        return Path(self.config) if self.config else None


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

    # Files ccgate keeps on each server (names ccgate-<backend>-<tag>-<n>.bin, the tag naming the
    # deployment, backend and model; reused least recently used first), so its disk use stays
    # bounded: each holds one prompt's KV cache. Default: twice the server's slots. 0: never.
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
