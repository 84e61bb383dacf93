"""The running gateway: the policy, its backends and their health, and one request's route."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from opentelemetry import trace

from router.backends.base import Backend, Incoming
from router.backends.registry import build_backend, build_backends
from router.dispatch import Operation, Outcome, dispatch
from router.policy.affinity import known_prompt_tokens
from router.policy.engine import Engine
from router.policy.features import features_of
from router.policy.prefix import hashed
from router.policy.schema import Policy
from router.policy.snapshot import BackendSnapshot
from router.policy.transforms import Transform, apply
from router.protocol.anthropic import validate
from router.protocol.estimate import BYTES_PER_TOKEN
from router.protocol.handoff import Marks
from router.state.poller import Poller
from router.state.secret import local_secret, shared_secret
from router.state.shared import LocalShared
from router.state.store import BreakerSettings, MemoryState

RETIRE_AFTER = 900.0  # seconds a replaced backend's connections stay open for requests still on it
PASSIVE_HOLD_UNPOLLED = 10.0  # seconds an unreachable backend is skipped when no poller re-checks it


@dataclass(frozen=True, slots=True)
class Routing:
    """One policy with everything built from it; swapped whole on reload."""

    policy: Policy
    engine: Engine
    backends: dict[str, Backend]


class Gateway:
    def __init__(
        self,
        policy: Policy,
        poll_interval: float = 1.0,
        tracer: trace.Tracer | None = None,
        shared: LocalShared | None = None,
        marks: Marks | None = None,
    ) -> None:
        self.tracer = tracer or trace.NoOpTracer()
        self.marks = marks or Marks(local_secret())
        backends = build_backends(policy)
        self._routing = Routing(policy, Engine(policy), backends)
        # A probe saying "up" right after a request could not connect does not overrule it for a
        # few polls; with polling off nothing re-checks, so the mark lapses after a while.
        self.store = MemoryState(
            backends,
            _breakers(policy),
            passive_window=max(1.0, poll_interval),
            passive_hold=None if poll_interval > 0 else PASSIVE_HOLD_UNPOLLED,
        )
        self.shared = shared or LocalShared()
        self.store.on_breaker = self.shared.breaker
        self.poller = Poller(backends, self.store, interval=poll_interval)
        self._background: set[asyncio.Task[None]] = set()
        self._sequence = itertools.count()
        self.on_prefix: Callable[[str, int], None] = lambda backend, reused: None  # metrics hook
        self.on_policy: Callable[[Policy], None] = lambda policy: None  # told of each policy put in force

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
        await self.shared.start()
        self.marks.use(await shared_secret(self.shared, self.marks.secret))
        await self.poller.poll_once(everyone=True)
        self.poller.start()

    async def stop(self) -> None:
        await self.poller.stop()
        await self.shared.stop()
        for task in self._background:
            task.cancel()
        for backend in self.backends.values():
            await backend.aclose()

    async def route(self, incoming: Incoming, operation: Operation) -> Outcome:
        routing = self._routing  # a reload mid-request does not change this request's world
        features = features_of(incoming.request, incoming.raw, incoming.headers, len(incoming.body))
        hashes, total_bytes = hashed(incoming.raw)
        with self.tracer.start_as_current_span("ccgate.route") as span:
            view = await self.shared.view(hashes)
            snapshot = _with_other_replicas(self.store.snapshot(), view.others, self.shared.breakers)
            known = known_prompt_tokens(view.prefix, total_bytes, BYTES_PER_TOKEN)
            if known is not None:
                incoming = replace(incoming, known_tokens=known)
                features = replace(features, tokens=known)
            decision = routing.engine.decide(features, snapshot, view.prefix, next(self._sequence))
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
        outcome = await dispatch(
            decision,
            routing.backends,
            self.store,
            incoming,
            operation,
            moves_on,
            self.tracer,
            self.shared.begin,
            self.marks,
        )
        if operation == "messages":
            self._learn_on_close(outcome, hashes, total_bytes)
        return outcome

    def _learn_on_close(self, outcome: Outcome, hashes: list[str], total_bytes: int) -> None:
        """Once the answer is complete, record which backend and slot now hold this prompt."""
        reply, backend, slot, choice = outcome.reply, outcome.backend, outcome.slot, outcome.choice
        self.on_prefix(backend, choice.reused if choice else 0)
        previous = choice.held if choice else None

        def learn() -> None:
            tokens = reply.usage.input + reply.usage.cached
            if tokens and reply.status == 200:
                self.shared.remember(hashes, backend, slot, tokens, total_bytes, previous)

        if reply.streaming:
            reply.on_close.append(learn)
        else:
            learn()

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
        self.on_policy(policy)
        self.poller.backends = backends
        if changed:
            self._spawn(self.poller.poll_once(everyone=True))
        kept_ids = {id(b) for b in backends.values()}
        for backend in old.backends.values():
            if id(backend) not in kept_ids:
                self._spawn(_close_later(backend, RETIRE_AFTER))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def snapshot(self) -> dict[str, BackendSnapshot]:
        """Backend state with the other replicas' load as last read (for metrics and readiness)."""
        return _with_other_replicas(self.store.snapshot(), self.shared.others, self.shared.breakers)

    def describe(self) -> list[str]:
        """Start-up lines a person reads: where each rule sends requests and what is up."""
        snapshot = self.store.snapshot()
        lines = [
            f"rule {r.name}: {' -> '.join(g[0] if len(g) == 1 else '(' + ' | '.join(g) + ')' for g in r.groups)}"
            for r in self.policy.rules
        ]
        for name, backend in self.backends.items():
            config = backend.config
            status = snapshot[name]
            state = (status.detail or "up") if status.healthy else f"DOWN ({status.detail})"
            if status.breaker_detail:
                state += f"; {status.breaker_detail}"
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
        """Ready when at least one backend can take requests: reachable, its breaker not open."""
        return any(s.available for s in self.snapshot().values())


def _with_other_replicas(
    snapshot: dict[str, BackendSnapshot], others: dict[str, int], breakers: dict[str, float]
) -> dict[str, BackendSnapshot]:
    """Other replicas' requests count as foreign load: at least what they say they have in flight
    (llama-server's own report, polled, may be older). A breaker another replica opened is open."""
    if not others and not breakers:
        return snapshot
    out = {}
    for name, state in snapshot.items():
        if others.get(name):
            state = replace(state, foreign=max(state.foreign, others[name]))
        if name in breakers and state.breaker == "closed":
            state = replace(state, breaker="open", breaker_detail="breaker open (opened by another replica)")
        out[name] = state
    return out


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
