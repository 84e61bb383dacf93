"""The running gateway: the policy, its backends and their health, and one request's route."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from opentelemetry import trace

from router.backends.base import Backend, Incoming
from router.backends.registry import build_backend, build_backends
from router.dispatch import Operation, Outcome, dispatch
from router.policy.engine import Engine
from router.policy.features import features_of
from router.policy.schema import Policy
from router.policy.transforms import Transform, apply
from router.protocol.anthropic import validate
from router.state.poller import Poller
from router.state.store import BreakerSettings, MemoryState

RETIRE_AFTER = 900.0  # seconds a replaced backend's connections stay open for requests still on it


@dataclass(frozen=True, slots=True)
class Routing:
    """One policy with everything built from it; swapped whole on reload."""

    policy: Policy
    engine: Engine
    backends: dict[str, Backend]


class Gateway:
    def __init__(self, policy: Policy, poll_interval: float = 1.0, tracer: trace.Tracer | None = None) -> None:
        self.tracer = tracer or trace.NoOpTracer()
        backends = build_backends(policy)
        self._routing = Routing(policy, Engine(policy), backends)
        self.store = MemoryState(backends, _breakers(policy))
        self.poller = Poller(backends, self.store, interval=poll_interval)
        self._background: set[asyncio.Task[None]] = set()

    @property
    def policy(self) -> Policy:
        return self._routing.policy

    @property
    def engine(self) -> Engine:
        return self._routing.engine

    @property
    def backends(self) -> dict[str, Backend]:
        return self._routing.backends

    async def start(self) -> None:
        await self.poller.poll_once()
        self.poller.start()

    async def stop(self) -> None:
        await self.poller.stop()
        for task in self._background:
            task.cancel()
        for backend in self.backends.values():
            await backend.aclose()

    async def route(self, incoming: Incoming, operation: Operation) -> Outcome:
        routing = self._routing  # a reload mid-request does not change this request's world
        features = features_of(incoming.request, incoming.raw, incoming.headers, len(incoming.body))
        with self.tracer.start_as_current_span("ccgate.route") as span:
            decision = routing.engine.decide(features, self.store.snapshot())
            if span.is_recording():
                span.set_attributes(
                    {
                        "ccgate.rule": decision.rule,
                        "ccgate.candidates": list(decision.candidates),
                        "ccgate.skipped": [f"{n}: {why}" for n, why in decision.skipped.items()],
                        "ccgate.estimated_input_tokens": features.tokens,
                    }
                )
        if decision.transform is not None:
            incoming = transformed(incoming, decision.transform)
        moves_on = frozenset(routing.policy.fallback.on)
        return await dispatch(decision, routing.backends, self.store, incoming, operation, moves_on, self.tracer)

    def reload(self, policy: Policy) -> None:
        """Swap in a new policy at once. Backends whose config did not change keep their
        connections and state; replaced ones are closed once their requests had time to end."""
        old = self._routing
        backends: dict[str, Backend] = {}
        for name, config in policy.backends.items():
            kept = old.backends.get(name)
            backends[name] = kept if kept is not None and kept.config == config else build_backend(name, config)
        changed = [n for n, b in backends.items() if old.backends.get(n) is not b]
        self.store.configure(backends, _breakers(policy), changed)
        self._routing = Routing(policy, Engine(policy), backends)
        self.poller.backends = backends
        if changed:
            self._spawn(self.poller.poll_once())
        kept_ids = {id(b) for b in backends.values()}
        for backend in old.backends.values():
            if id(backend) not in kept_ids:
                self._spawn(_close_later(backend, RETIRE_AFTER))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def describe(self) -> list[str]:
        """Start-up lines a person reads: where each rule sends requests and what is up."""
        snapshot = self.store.snapshot()
        lines = [f"rule {r.name}: {' -> '.join(r.to)}" for r in self.policy.rules]
        for name, backend in self.backends.items():
            config = backend.config
            status = snapshot[name]
            state = (status.detail or "up") if status.healthy else f"DOWN ({status.detail})"
            auth = {
                "auto": "own key, else the client's" if config.api_key else "the client's own credentials",
                "key": "own key" if config.api_key else "no credentials",
                "passthrough": "the client's own credentials",
                "none": "no credentials",
            }[config.effective_auth]
            lines.append(
                f"backend {name}: {config.kind}/{config.wire_dialect} at {safe_url(config.url)}, {auth}: {state}"
            )
        return lines

    def ready(self) -> bool:
        """Ready when at least one backend looks healthy."""
        return any(s.healthy for s in self.store.snapshot().values())


def safe_url(url: str) -> str:
    """The URL without any user:password part, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _breakers(policy: Policy) -> dict[str, BreakerSettings]:
    return {n: BreakerSettings(c.breaker.failures, c.breaker.cooldown) for n, c in policy.backends.items()}


async def _close_later(backend: Backend, delay: float) -> None:
    await asyncio.sleep(delay)
    await backend.aclose()


def transformed(incoming: Incoming, step: Transform) -> Incoming:
    raw = apply(step, incoming.raw)
    return Incoming(
        validate(raw, type(incoming.request)), raw, msgspec.json.encode(raw), incoming.headers, incoming.query
    )
