"""The running gateway: the policy, its backends and their health, and one request's route."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
from opentelemetry import trace

from router.admission import budget_refusal, local_backends, output_bound, refusal, within_budget
from router.backends.base import Backend, BackendError, Incoming
from router.backends.http import UpstreamClient, describe
from router.backends.registry import build_backend, build_backends
from router.backends.slot_files import Outcome as SlotFileOutcome
from router.backends.slot_files import prepare_slot
from router.dispatch import DispatchFailed, Operation, Outcome, both, dispatch
from router.policy.affinity import NO_SLOT, SlotChoice, known_prompt_tokens
from router.policy.engine import Decision, Engine, slot_files_state
from router.policy.features import Features, features_of
from router.policy.identity import Identity
from router.policy.prefix import hashed_fields
from router.policy.schema import Policy
from router.policy.snapshot import BackendSnapshot
from router.policy.transforms import Transform, apply
from router.protocol.anthropic import MessagesRequest, validate
from router.protocol.estimate import BYTES_PER_TOKEN
from router.protocol.handoff import Marks
from router.protocol.usage import Usage
from router.state.accounting import Accounting, Reservation
from router.state.keys import KeyStore
from router.state.poller import Poller
from router.state.published_policy import summary as policy_summary
from router.state.queue import SlotQueue
from router.state.redis_shared import RedisShared
from router.state.secret import local_secret, shared_secret
from router.state.shared import LocalShared, SharedView
from router.state.store import BreakerSettings, MemoryState

log = logging.getLogger("ccgate.gateway")
# An estimate within these factors of a local backend's window is counted by that llama-server
# (a round trip, 30-60 ms for Claude Code's prompt on Gemma: bench/token_estimate.py). Above the
# window up to 8x: indented code runs ~2.4x fewer tokens than bytes / 3.8 says, and a template
# that leaves the tools out (Gemma's) makes Claude Code's prompt ~6.7x smaller, so it may fit.
# Below, only the last 20%: digits run up to ~3.8x more, but counting every prompt that far
# below would tax every request; llama-server's 400 still moves such a rare one to a fallback.
COUNT_NEAR = (0.8, 8.0)
PINNED_REUSE_CHECKED = 1024  # tokens a pinned slot was to reuse: an answer reusing none of them counts
COUNT_WITHIN = 2.0  # seconds a count may take; past it the estimate stands
RETIRE_AFTER = 900.0  # seconds a replaced backend's connections stay open for requests still on it
WAIT_POLL = 0.05  # seconds between looks at a busy backend, for a request waiting for it
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
        self.store.on_restart = self.shared.slots_emptied
        self.poller = Poller(backends, self.store, interval=poll_interval)
        self._background: set[asyncio.Task[None]] = set()
        self._sequence = itertools.count()
        self.on_prefix: Callable[[str, int], None] = lambda backend, reused: None  # metrics hook
        self.on_slot_file: SlotFileOutcome = lambda backend, action, result, seconds: None
        self.on_policy: Callable[[Policy], None] = lambda policy: None  # told of each policy put in force
        self.on_usage: Callable[[str, str, bool, Usage], None] = lambda team, backend, cloud, usage: None
        self.on_wait: Callable[[str, float], None] = lambda backend, seconds: None
        self.on_queue: Callable[[str, int], None] = lambda backend, change: None  # requests waiting
        self.on_limited: Callable[[Identity, str], None] = lambda identity, limit: None
        # Team keys, their limits and usage (with REDIS_URL); None: auth open, or no Redis
        self.keys: KeyStore | None = None
        self.accounting: Accounting | None = None
        self.queue = SlotQueue(self.shared.client if isinstance(self.shared, RedisShared) else None)

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
        self.shared.publish_policy(policy_summary(self.policy))
        self.marks.use(await shared_secret(self.shared, self.marks.secret))
        await self.poller.poll_once(everyone=True)
        self.poller.start()

    async def stop(self) -> None:
        await self.poller.stop()
        await self.shared.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for backend in self.backends.values():
            await backend.aclose()

    async def route(self, incoming: Incoming, operation: Operation, identity: Identity | None = None) -> Outcome:
        routing = self._routing  # a reload mid-request does not change this request's world
        features = features_of(incoming.request, incoming.raw, incoming.headers, len(incoming.body))
        hashes, total_bytes = hashed_fields(incoming.top())
        reservation: Reservation | None = None
        with self.tracer.start_as_current_span("ccgate.route") as span:
            if identity is not None and self.accounting is not None and operation == "messages":
                # its limits, checked beside the shared view (counting tokens is free and unlimited);
                # what it may use is reserved against them in the same script, settled by its answer
                estimate = features.tokens + output_bound(routing.policy, features.max_tokens)
                call = self.accounting.admission_call(identity, estimate)
                try:
                    view = await self.shared.view(hashes, call)  # one round trip for both
                    admission = await self.accounting.admission_of(identity, call, view.script_result)
                except BaseException:  # the client gone, or Redis failed, mid-way: it may have reserved
                    self._release(identity, self.accounting.reservation_of(call))
                    raise
                if not admission.admitted:
                    self.on_limited(identity, admission.refused)
                    raise refusal(identity, admission, time.time())
                identity = within_budget(identity, admission)
                reservation = admission.reservation
            else:
                view = await self.shared.view(hashes)
            try:
                decision, features, incoming, queued = await self._decide(
                    routing, features, incoming, identity, view, hashes, total_bytes, span
                )
            except BaseException:
                self._release(identity, reservation)
                raise
        try:
            outcome = await self._send(decision, routing, incoming, operation, identity, queued)
        except BaseException:  # no answer (refused everywhere, or the client gone): nothing to settle
            self._release(identity, reservation)
            raise
        if operation == "messages":
            self._learn_on_close(outcome, hashes, total_bytes)
            if identity is not None:
                self._account_on_close(outcome, identity, routing, reservation)
        return outcome

    async def _decide(
        self,
        routing: Routing,
        features: Features,
        incoming: Incoming,
        identity: Identity | None,
        view: SharedView,
        hashes: list[str],
        total_bytes: int,
        span: trace.Span,
    ) -> tuple[Decision, Features, Incoming, tuple[str, str] | None]:
        """The decision on the shared view (and, with `when_busy: wait`, the wait for a slot)."""
        if identity is not None:
            held = self.shared.held(identity.key, local_backends(routing.policy))
            features = replace(features, identity=identity, team=identity.team, local_in_flight=held)
        snapshot = _with_other_replicas(self.store.snapshot(), view.others, self.shared.breakers)
        known = known_prompt_tokens(view.prefix, total_bytes, BYTES_PER_TOKEN)
        if known is not None:
            incoming = replace(incoming, known_tokens=known)
            features = replace(features, tokens=known)
        decision = routing.engine.decide(features, snapshot, view.prefix, next(self._sequence))
        counted = await self._count_near_window(routing, decision, features.tokens, incoming, snapshot)
        if counted is not None:  # decided again on the real count
            incoming = replace(incoming, known_tokens=counted)
            features = replace(features, tokens=counted)
            span.set_attribute("ccgate.counted_input_tokens", counted)
            decision = routing.engine.decide(features, snapshot, view.prefix, next(self._sequence))
        queued: tuple[str, str] | None = None  # (backend, ticket) of a request that waited its turn
        if decision.wait_for is not None and not decision.candidates and identity is not None:
            decision, queued = await self._wait_for_slot(decision, features, hashes, identity, span)
        if span.is_recording():
            span.set_attributes(
                {
                    "ccgate.rule": decision.rule,
                    "ccgate.candidates": list(decision.candidates),
                    "ccgate.skipped": [f"{n}: {why}" for n, why in decision.skipped.items()],
                    "ccgate.estimated_input_tokens": features.tokens,
                }
            )
        return decision, features, incoming, queued

    async def _count_near_window(
        self,
        routing: Routing,
        decision: Decision,
        estimate: int,
        incoming: Incoming,
        snapshot: Mapping[str, BackendSnapshot],
    ) -> int | None:
        """The prompt's tokens as a llama-server counts them, when the estimate (bytes / 3.8, or
        the known prefix plus that) is near the window of a local backend the decision took or
        skipped for its context: indented code has far fewer tokens than its bytes say, digits
        more, and only a count can tell whether the prompt fits. None: nothing near, or no
        count (the estimate stands)."""
        if not isinstance(incoming.request, MessagesRequest):
            return None
        context = [name for name, kind in decision.skip_kinds.items() if kind == "context"]
        for name in (*decision.candidates, *context):
            config = routing.policy.backends[name]
            state = snapshot.get(name)
            window = config.context_window or (state.n_ctx if state is not None else None)
            if config.kind != "llamacpp" or state is None or not state.available or not window:
                continue
            if not window * COUNT_NEAR[0] <= estimate <= window * COUNT_NEAR[1]:
                continue
            try:
                async with asyncio.timeout(COUNT_WITHIN):
                    reply = await routing.backends[name].count_tokens(replace(incoming, slot=None))
                counted = msgspec.json.decode(reply.body).get("input_tokens")
            except Exception as exc:  # noqa: BLE001 - a count is an improvement, never a failure
                reason = exc.reason if isinstance(exc, BackendError) else describe(exc)
                log.info("backend %s could not count the prompt (%s): the estimate stands", name, reason)
                return None
            return counted if type(counted) is int and counted > 0 else None
        return None

    async def _send(
        self,
        decision: Decision,
        routing: Routing,
        incoming: Incoming,
        operation: Operation,
        identity: Identity | None,
        queued: tuple[str, str] | None,
    ) -> Outcome:
        """Dispatch to the decision's candidates; the key's in-flight counts held meanwhile."""
        if decision.transform is not None:
            incoming = transformed(incoming, decision.transform)
        moves_on = frozenset(routing.policy.fallback.on)
        track = self.shared.begin
        if identity is not None:
            key = identity.key

            def track(backend: str, slot: int) -> Callable[[], None]:
                if queued is not None:  # on the slot now: the next in the queue may have the next one
                    self.spawn(self.queue.leave(*queued))
                return both(self.shared.begin(backend, slot), self.shared.hold(key, backend))

        try:
            return await dispatch(
                decision,
                routing.backends,
                self.store,
                incoming,
                operation,
                moves_on,
                self.tracer,
                track,
                self.marks,
                self._prepare_slot,
            )
        except DispatchFailed as failure:
            if failure.status == 429 and identity is not None and identity.budget_spent:
                raise budget_refusal(identity, failure, time.time()) from None
            if failure.status == 529 and identity is not None and decision.rejected_busy:
                failure.message = (
                    f"the local box is busy (or key {identity.key} holds its whole local share) "
                    "and the key does not fall back (when_busy: reject); retry shortly"
                )
            raise
        finally:
            if queued is not None:  # not awaited: a client gone in that round trip would lose the answer
                self.spawn(self.queue.leave(*queued))  # (and its open upstream) before it could be closed

    async def _prepare_slot(self, name: str, backend: Backend, choice: SlotChoice) -> SlotChoice:
        http = getattr(backend, "http", None)  # llama-server's backends have one; a stand-in may not
        if not isinstance(http, UpstreamClient):
            return replace(choice, save="", restore="", restored=None)
        return await prepare_slot(name, http, choice, self.shared, self.on_slot_file)

    def _release(self, identity: Identity | None, reservation: Reservation | None) -> None:
        if identity is not None and self.accounting is not None:
            self.accounting.release(identity, reservation)

    async def _wait_for_slot(
        self, decision: Decision, features: Features, hashes: list[str], identity: Identity, span: trace.Span
    ) -> tuple[Decision, tuple[str, str]]:
        """`when_busy: wait`: queue for the local backend, first come first served across replicas,
        until a slot frees (then the request goes there, and leaves the queue once on the slot) or
        the wait runs out (529)."""
        backend = decision.wait_for
        assert backend is not None
        clock = asyncio.get_running_loop().time
        started = clock()
        ticket = await self.queue.join(backend, identity.wait_seconds)
        self.on_queue(backend, 1)
        try:
            while True:
                await asyncio.sleep(WAIT_POLL)
                view = await self.shared.view(hashes)
                routing = self._routing
                held = self.shared.held(identity.key, local_backends(routing.policy))
                snapshot = _with_other_replicas(self.store.snapshot(), view.others, self.shared.breakers)
                again = routing.engine.decide(
                    replace(features, local_in_flight=held), snapshot, view.prefix, next(self._sequence)
                )
                waited = clock() - started
                if again.candidates and await self.queue.first(backend, ticket):
                    self.on_wait(backend, waited)
                    span.add_event("ccgate.waited", {"ccgate.backend": backend, "ccgate.wait_seconds": waited})
                    return again, (backend, ticket)
                if waited >= identity.wait_seconds:
                    self.on_wait(backend, waited)
                    raise DispatchFailed(
                        529,
                        f"waited {identity.wait_seconds:g}s for a free slot on {backend} "
                        f"(key {identity.key}: when_busy wait)",
                        "overloaded_error",
                        decision.rule,
                        [f"{n}: {why}" for n, why in again.skipped.items()],
                    )
        except BaseException:  # gave up, or the client left: out of the queue now
            await self.queue.leave(backend, ticket)
            raise
        finally:
            self.on_queue(backend, -1)

    def _account_on_close(
        self, outcome: Outcome, identity: Identity, routing: Routing, reservation: Reservation | None
    ) -> None:
        """Once the answer is complete, count its tokens against the key's limits and usage, and
        settle what admission reserved for it."""
        reply, backend = outcome.reply, outcome.backend
        cloud = routing.policy.backends[backend].kind != "llamacpp"

        def account() -> None:
            self.on_usage(identity.team, backend, cloud, reply.usage)
            if self.accounting is not None:
                self.accounting.record(identity, backend, cloud, reply.usage, reservation)

        if reply.streaming:
            reply.on_close.append(account)
        else:
            account()

    def _learn_on_close(self, outcome: Outcome, hashes: list[str], total_bytes: int) -> None:
        """Once the answer is complete, record which backend and slot now hold this prompt."""
        reply, backend, slot, choice = outcome.reply, outcome.backend, outcome.slot, outcome.choice
        self.on_prefix(backend, choice.reused if choice else 0)
        previous = choice.held if choice else None

        def learn() -> None:
            usage = reply.usage  # the prompt's tokens, however the backend split them
            tokens = usage.input + usage.cached + usage.cache_write + usage.cache_write_1h
            if tokens and reply.status == 200:
                self.shared.remember(hashes, backend, slot, tokens, total_bytes, previous)
                if choice is not None and choice.slot != NO_SLOT:
                    self._check_reuse(backend, choice, usage.cached)

        if reply.streaming:
            reply.on_close.append(learn)
        else:
            learn()

    def _check_reuse(self, backend: str, choice: SlotChoice, cached: int) -> None:
        """Did the pinned slot give back what it was to? A restore always counts; a slot's own
        prefix when long enough that reusing none of it is no accident."""
        restored = bool(choice.restore and choice.restored)
        if restored or choice.reused >= PINNED_REUSE_CHECKED:
            self.store.reuse_seen(backend, cached >= choice.reused // 2, restored)

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
        self.shared.publish_policy(policy_summary(policy))
        self.poller.backends = backends
        if changed:
            self.spawn(self.poller.poll_once(everyone=True))
        kept_ids = {id(b) for b in backends.values()}
        for backend in old.backends.values():
            if id(backend) not in kept_ids:
                self.spawn(_close_later(backend, RETIRE_AFTER))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
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
            http = getattr(backend, "http", None)  # how it is reached: direct, or via which proxy
            egress = f", {http.egress.describe()}" if http is not None else ""
            where = f"{config.kind}/{config.wire_dialect} at {safe_url(config.url)}{egress}"
            files = slot_files_state(config, status)
            lines.append(f"backend {name}: {where}, {auth}: {state}" + (f"; slot files {files}" if files else ""))
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
    try:
        await asyncio.sleep(delay)
    finally:  # the gateway stopping cancels the wait: the connections close all the same
        await backend.aclose()


def transformed(incoming: Incoming, step: Transform) -> Incoming:
    """The request after a rule's transform: a client's native body no longer says what to send."""
    raw = apply(step, incoming.raw)
    request = validate(raw, type(incoming.request))
    return Incoming(request, raw, msgspec.json.encode(raw), incoming.headers, incoming.query, dialect=incoming.dialect)
