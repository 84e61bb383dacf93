"""Build the Litestar app from Settings: the one place that wires the parts together."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from opentelemetry.sdk.trace import TracerProvider

from router.api import admin, health, messages, openai, openapi
from router.api import metrics as api_metrics
from router.api.auth import auth_mode, credential_warnings
from router.api.errors import EXCEPTION_HANDLERS
from router.api.request_log import every_answer_traced
from router.config import Settings
from router.gateway import Gateway
from router.policy.loader import default_policy_path, load_policy
from router.policy.schema import Policy
from router.server.reloader import PolicyReloader
from router.state.accounting import Accounting
from router.state.keys import KeyStore
from router.state.redis_shared import RedisShared
from router.state.shared import LocalShared
from router.telemetry.metrics import Metrics
from router.telemetry.tracing import provider_from_env, tracer_of

log = logging.getLogger("ccgate")


def create_app(
    settings: Settings | None = None, policy: Policy | None = None, tracer_provider: TracerProvider | None = None
) -> Litestar:
    settings = settings or Settings.from_env()
    policy = policy or load_policy(settings.policy_path)
    tracer_provider = tracer_provider or provider_from_env()
    metrics = Metrics()
    shared = _shared_state(settings, policy, metrics)
    gateway = Gateway(policy, poll_interval=settings.health_interval, tracer=tracer_of(tracer_provider), shared=shared)
    metrics.watch_backends(gateway.snapshot)
    metrics.start_at_zero(policy)
    gateway.on_policy = metrics.start_at_zero
    gateway.on_usage = metrics.count_team_usage
    gateway.on_wait = lambda backend, seconds: metrics.waits.labels(backend).observe(seconds)
    gateway.on_queue = lambda backend, change: metrics.waiting.labels(backend).inc(change)
    gateway.on_limited = lambda identity, limit: metrics.limited.labels(identity.team, limit).inc()
    mode = auth_mode(settings, policy)
    if mode == "keys":
        if not isinstance(shared, RedisShared):
            raise ValueError("CCGATE_AUTH=keys keeps its keys and usage in Redis: set REDIS_URL")
        gateway.keys = KeyStore(shared.client, policy.state.key_prefix)
        gateway.accounting = Accounting(shared.client, policy.state.key_prefix)
    gateway.on_prefix = lambda backend, reused: metrics.count_prefix(backend, reused)
    gateway.on_slot_file = metrics.count_slot_file

    reloader = PolicyReloader(
        gateway, settings.policy_path or default_policy_path(), settings.reload_interval, metrics.reloads
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await gateway.start()
        reloader.start()
        settle_heap()
        for line in gateway.describe():
            log.info(line)
        log.info("state: %s", _describe_state(shared))
        log.info("auth: %s", _describe_auth(mode, settings))
        for warning in credential_warnings(settings, gateway.policy):
            log.warning(warning)
        try:
            yield
        finally:
            await reloader.stop()
            await gateway.stop()
            if gateway.accounting is not None:
                await gateway.accounting.drain(within=USAGE_DRAIN)
            if tracer_provider is not None:
                tracer_provider.shutdown()  # flushes what the batch processor still holds

    return Litestar(
        route_handlers=[
            messages.create_message,
            messages.count_tokens,
            messages.list_models,
            openai.chat_completions,
            openai.responses,
            health.probe_head,
            health.index,
            health.healthz,
            health.readyz,
            admin.admin_explain,
            admin.list_keys,
            admin.add_key,
            admin.revoke_key,
            admin.usage,
            api_metrics.prometheus_metrics,
            openapi.openapi_document,
        ],
        state=State({"gateway": gateway, "settings": settings, "metrics": metrics}),
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=[every_answer_traced],
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,
        logging_config=None,
    )


USAGE_DRAIN = 10.0  # seconds a stopping replica waits for Redis to take the last usage writes


def settle_heap() -> None:
    """What start-up built (modules, the app, the policy) lives as long as the process. Frozen out
    of the cyclic collector, it is no longer walked by every full collection, which a request's
    tens of thousands of short-lived objects (a 78 KB body decoded) trigger every few hundred
    requests: those pauses were the gateway's p99 (bench/overhead.py)."""
    gc.collect()
    gc.freeze()


def _shared_state(settings: Settings, policy: Policy, metrics: Metrics) -> LocalShared:
    """Redis when REDIS_URL (or the policy's state.redis_url) names one; else this process."""
    url = settings.redis_url or policy.state.redis_url
    if not url:
        metrics.redis_up.set(0)
        return LocalShared()
    metrics.redis_up.set(1)
    return RedisShared(
        url,
        prefix=policy.state.key_prefix,
        on_error=metrics.redis_errors.inc,
        on_state=lambda up: metrics.redis_up.set(1 if up else 0),
        on_round_trip=metrics.redis_round_trips.inc,
    )


def _describe_auth(mode: str, settings: Settings) -> str:
    admin = "open to CCGATE_ADMIN_TOKEN" if settings.admin_token else "closed (no CCGATE_ADMIN_TOKEN)"
    if mode == "keys":
        return f"team keys (x-api-key, Authorization: Bearer or x-ccgate-key); /admin/ {admin}"
    return f"open: anyone who reaches {settings.host}:{settings.port} uses it; /admin/ " + (
        admin if settings.admin_token else "open (auth open)"
    )


def _describe_state(shared: LocalShared) -> str:
    if isinstance(shared, RedisShared):
        return f"shared in redis ({shared.where}), replica {shared.replica}" + ("" if shared.up else " - REDIS DOWN")
    return "in memory (one replica; set REDIS_URL to share it)"
