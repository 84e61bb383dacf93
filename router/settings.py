"""Process settings: command line over environment over defaults, validated at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

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
    # CCGATE_WORKERS / --workers: processes answering on the port (router/workers.py)
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
