"""Try a decision's candidates in order until one answers; the rest are its fallbacks.

A candidate is left for the next one only while nothing has reached the client: every Reply a
backend returns has already read its first byte, so a failure after that point is the stream's
own business (it ends with an Anthropic error event), never a fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from opentelemetry import trace

from router.backends.base import (
    Backend,
    BackendError,
    BackendHTTPError,
    BackendProtocolError,
    BackendRunaway,
    BackendTimeout,
    BackendToolCallError,
    BackendUnavailable,
    Incoming,
    Reply,
)
from router.backends.handoff import for_the_api, from_a_local_model, mark_reply, to_the_api
from router.policy.affinity import NO_SLOT, SlotChoice
from router.policy.engine import Decision
from router.policy.schema import ALL_FAILURES
from router.protocol.errors import BadUpstreamResponse
from router.protocol.handoff import Handoff, Marks
from router.state.store import StateStore

log = logging.getLogger("ccgate.dispatch")

Operation = Literal["messages", "count_tokens"]
GEN_AI_OPERATION = {"messages": "chat", "count_tokens": "count_tokens"}
GEN_AI_PROVIDER = {"anthropic": "anthropic", "openai": "openai", "llamacpp": "llama.cpp"}


@dataclass(slots=True)
class Outcome:
    reply: Reply
    backend: str
    rule: str
    fallbacks: list[str] = field(default_factory=list)  # "backend: reason" of each candidate passed over
    passed: list[tuple[str, str]] = field(default_factory=list)  # (backend, kind) for metrics
    choice: SlotChoice | None = None  # the llama.cpp slot it was pinned to, as the prefix index saw it
    handoff: Handoff | None = None  # what was changed for the Anthropic API (thinking, tool ids)

    @property
    def slot(self) -> int:
        return self.choice.slot if self.choice is not None else NO_SLOT


class DispatchFailed(Exception):
    """No candidate answered. Carries the status and message the client gets."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str | None,
        rule: str,
        fallbacks: list[str],
        passed: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.rule = rule
        self.fallbacks = fallbacks
        self.passed = passed or []
        self.headers = headers or {}  # e.g. retry-after and anthropic-ratelimit-* for a 429


async def dispatch(
    decision: Decision,
    backends: Mapping[str, Backend],
    store: StateStore,
    incoming: Incoming,
    operation: Operation,
    moves_on: frozenset[str] = frozenset(ALL_FAILURES),
    tracer: trace.Tracer | None = None,
    track_slot: Callable[[str, int], Callable[[], None]] | None = None,
    marks: Marks | None = None,
    prepare_slot: Callable[[str, Backend, SlotChoice], Awaitable[SlotChoice]] | None = None,
) -> Outcome:
    """`track_slot(backend, slot)` counts a request in progress on a slot; call what it returns when done.
    `marks`: sign local answers and make the history acceptable to the Anthropic API (handoff).
    `prepare_slot`: saves and restores slot files as a choice says (backends/slot_files.py)."""
    tracer = tracer or trace.NoOpTracer()
    for_api: tuple[Incoming, Handoff | None] | None = None  # computed once, for the first API candidate
    secrets = known_secrets(backends, incoming.headers)
    passed_over = [f"{name}: {why}" for name, why in decision.skipped.items()]
    passed = list(decision.skip_kinds.items())
    failures: list[BackendError] = []
    spare: tuple[Reply, str, SlotChoice | None] | None = None  # a runaway's stopped answer, kept
    for position, name in enumerate(decision.candidates, start=1):
        backend = backends[name]
        choice = decision.slots.get(name)
        slot = choice.slot if choice is not None else NO_SLOT
        attempt = replace(incoming, slot=slot if slot != NO_SLOT else None)
        handoff: Handoff | None = None
        if marks is not None and to_the_api(backend.config):
            for_api = for_api or for_the_api(incoming, marks)
            attempt, handoff = for_api
        end = both(store.begin(name), track_slot(name, slot) if track_slot else None)
        span = tracer.start_span(
            f"{GEN_AI_OPERATION[operation]} {backend.config.upstream_model(incoming.request.model)}",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": GEN_AI_OPERATION[operation],
                "gen_ai.provider.name": GEN_AI_PROVIDER[backend.config.kind],
                "gen_ai.request.model": backend.config.upstream_model(incoming.request.model),
                "ccgate.backend": name,
                "ccgate.attempt": position,
            },
        )
        try:
            if prepare_slot and choice and operation == "messages" and (choice.save or choice.restore):
                choice = await prepare_slot(name, backend, choice)
                span.set_attributes({"ccgate.llamacpp.saved": choice.save, "ccgate.llamacpp.restored": choice.restore})
            try:
                reply = await (backend.messages(attempt) if operation == "messages" else backend.count_tokens(attempt))
            except BackendRunaway as exc:
                # a loop caught before anything went out: the next target may do better; with none
                # left (or should they all fail), the answer as stopped (its text, then why it
                # ended) beats an error
                if exc.stopped is None or (position < len(decision.candidates) and "runaway" in moves_on):
                    if exc.stopped is not None and spare is None:
                        spare = (exc.stopped, name, choice)
                    raise
                log.warning("backend %s: %s; nothing else can take it: the stopped answer goes out", name, exc.reason)
                reply = exc.stopped
            try:  # both read what is already in hand: nothing has reached the client
                if marks is not None and operation == "messages" and from_a_local_model(backend.config):
                    mark_reply(reply, marks)
                reply.track_usage()
            except BadUpstreamResponse as bad:
                await reply.aclose()
                raise BackendProtocolError(name, str(bad)) from None
        except BackendError as exc:
            exc.redact(secrets)
            end()
            span.set_attribute("error.type", failure_kind(exc))
            span.set_status(trace.Status(trace.StatusCode.ERROR, exc.reason))
            span.end()
            failures.append(exc)
            passed_over.append(f"{name}: {exc.reason}")
            passed.append((name, failure_kind(exc)))
            if isinstance(exc, BackendHTTPError) and exc.n_ctx:
                store.learn_context(name, exc.n_ctx)
            if _is_backend_fault(exc):
                store.failed(name, exc.reason, unreachable=isinstance(exc, BackendUnavailable))
            if not exc.retryable or failure_kind(exc) not in moves_on:
                break
            if position < len(decision.candidates):
                log.warning("backend %s failed before the first byte (%s); trying the next one", name, exc.reason)
        except BaseException as exc:
            end()
            span.set_attribute("error.type", type(exc).__name__)
            span.end()
            raise
        else:
            store.succeeded(name)
            span.add_event("first_byte")
            if slot != NO_SLOT:  # before `finish`, which ends the span of a whole answer at once
                span.set_attribute("ccgate.llamacpp.slot", slot)
            if choice is not None:  # what the prefix index predicted, beside what the engine reports
                span.set_attribute("ccgate.prefix.predicted_tokens", choice.reused)
            if handoff is not None:
                span.set_attribute("ccgate.handoff", handoff.actions)
            finish = _finisher(span, reply)
            if reply.streaming:
                reply.on_close += [end, finish]
            else:
                end()
                finish()
            return Outcome(reply, name, decision.rule, passed_over, passed, choice, handoff)
    if spare is not None:
        reply, name, choice = spare
        log.warning("every other backend failed too: the stopped answer of %s goes out", name)
        if marks is not None and operation == "messages" and from_a_local_model(backends[name].config):
            mark_reply(reply, marks)
        reply.track_usage()
        return Outcome(reply, name, decision.rule, passed_over, passed, choice)
    failure = _failure(decision.rule, failures, passed_over, decision.skip_kinds)
    failure.passed = passed
    raise failure


def known_secrets(backends: Mapping[str, Backend], headers: Mapping[str, str]) -> list[str]:
    """Every key an upstream could echo back: the configured ones and the client's own."""
    found = [b.config.api_key for b in backends.values() if b.config.api_key]
    for name in ("x-api-key", "authorization"):
        value = headers.get(name)
        if value:
            found += [value, value.split(" ", 1)[-1]]
    return found


def both(first: Callable[[], None], second: Callable[[], None] | None) -> Callable[[], None]:
    if second is None:
        return first

    def end() -> None:
        first()
        second()

    return end


def _finisher(span: trace.Span, reply: Reply) -> Callable[[], None]:
    def finish() -> None:
        usage = reply.usage
        written = usage.cache_write + usage.cache_write_1h
        span.set_attribute("gen_ai.usage.input_tokens", usage.input + usage.cached + written)
        span.set_attribute("gen_ai.usage.output_tokens", usage.output)
        span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cached)
        span.set_attribute("gen_ai.usage.cache_creation.input_tokens", written)
        span.set_attribute("ccgate.usage.cached_tokens", usage.cached)
        if usage.cache_write_1h:
            span.set_attribute("ccgate.usage.cache_write_1h_tokens", usage.cache_write_1h)
        if usage.estimated:  # no final count came (the answer was cut short): counted from what was relayed
            span.set_attribute("ccgate.usage.output_estimated_tokens", usage.estimated)
        if usage.model:
            span.set_attribute("gen_ai.response.model", usage.model)
        if usage.stop_reason:
            span.set_attribute("gen_ai.response.finish_reasons", [usage.stop_reason])
        for outcome in reply.tool_calls:
            span.add_event("ccgate.tool_call", {"ccgate.tool_call.outcome": outcome})
        if reply.runaway is not None and reply.runaway.stopped:
            span.add_event("ccgate.runaway", {"ccgate.runaway.kind": reply.runaway.stopped})
        span.end()

    return finish


def failure_kind(exc: BackendError) -> str:
    """The policy's name for a failure (`fallback.on`)."""
    if isinstance(exc, BackendUnavailable):
        return "connect"
    if isinstance(exc, BackendTimeout):
        return "timeout"
    if isinstance(exc, BackendToolCallError):
        return "tool_call"
    if isinstance(exc, BackendRunaway):
        return "runaway"
    if isinstance(exc, BackendHTTPError):
        if exc.error_type == "exceed_context_size_error":
            return "context"
        if exc.status in (429, 529):
            return str(exc.status)
        return "5xx" if exc.status >= 500 else "4xx"
    return "broken"


def _is_backend_fault(exc: BackendError) -> bool:
    """Failures that say something about the backend (for its breaker), not about the request.

    A rejected tool call (or a runaway answer) says the model cannot do this request, not that
    the server is down: it must not shut the backend off for other requests.
    """
    if isinstance(exc, BackendToolCallError | BackendRunaway):
        return False
    return not isinstance(exc, BackendHTTPError) or exc.status >= 500


def _failure(
    rule: str, failures: list[BackendError], passed_over: list[str], kinds: dict[str, str] | None = None
) -> DispatchFailed:
    summary = "; ".join(passed_over) or "no rule matched the request"
    kinds = kinds or {}
    if (
        not failures
        and "budget" in kinds.values()
        and all(k in ("forbidden", "budget", "busy", "share", "unhealthy", "breaker") for k in kinds.values())
    ):
        return DispatchFailed(
            429,
            f"the key's cloud budget is spent and nothing local can take the request ({summary})",
            "rate_limit_error",
            rule,
            passed_over,
        )
    if not failures and "credentials" in kinds.values():
        # The cloud would get no credentials and answer 401, which Claude Code retries silently:
        # say what to set instead, once, to the person
        names = ", ".join(name for name, kind in kinds.items() if kind == "credentials")
        return DispatchFailed(
            403,
            f"ccgate: backend {names} has no api_key and this request brings no credentials of its own, only "
            f"its team key, and nothing else could take it ({summary}). The admin sets api_key for {names} in "
            "the policy (api_key: ${ANTHROPIC_API_KEY}), or you send your own Anthropic key as x-api-key and "
            "the team key as x-ccgate-key (Claude Code: ANTHROPIC_CUSTOM_HEADERS='x-ccgate-key: ccg-...')",
            "permission_error",
            rule,
            passed_over,
        )
    if not failures and kinds and all(kind == "forbidden" for kind in kinds.values()):
        return DispatchFailed(
            403, f"this key may not use this rule's backends ({summary})", "permission_error", rule, passed_over
        )
    if not failures and kinds and all(kind == "context" for kind in kinds.values()):
        # No backend's window holds it, now or after any wait: a 529 would only make the client
        # retry for ever. Anthropic's words, which Claude Code answers by offering to compact.
        return DispatchFailed(
            400,
            f"prompt is too long for every backend of this rule ({summary})",
            "invalid_request_error",
            rule,
            passed_over,
        )
    if not failures or all(isinstance(f, BackendUnavailable) for f in failures):
        return DispatchFailed(
            529, f"no backend can take the request ({summary})", "overloaded_error", rule, passed_over
        )
    last = failures[-1]
    if isinstance(last, BackendHTTPError):
        # The upstream's own verdict on the request (e.g. 400 for a prompt it rejects, 429) is the
        # client's answer; its failures are a bad gateway (502), but for 529, which clients retry.
        message = last.message if len(failures) == 1 else f"every backend failed ({summary})"
        if last.status < 500:
            return DispatchFailed(last.status, message, last.error_type, rule, passed_over)
        if last.status == 529:
            return DispatchFailed(529, message, "overloaded_error", rule, passed_over)
        return DispatchFailed(
            502,
            f"{last.backend}: HTTP {last.status}: {message}" if len(failures) == 1 else message,
            None,
            rule,
            passed_over,
        )
    return DispatchFailed(last.status, f"backend failed: {summary}", None, rule, passed_over)
