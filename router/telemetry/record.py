"""What one request adds to the metrics, from what dispatch reports."""

from __future__ import annotations

import time

from router.backends.base import Reply
from router.dispatch import DispatchFailed, Outcome
from router.protocol.usage import Usage
from router.telemetry.metrics import Metrics


def outcome_label(status: int) -> str:
    if status == 429:
        return "limited"
    if status == 529:
        return "overloaded"
    if status == 504:
        return "timeout"
    if status >= 500:
        return "upstream_error"
    return "rejected"


def answered(metrics: Metrics, outcome: Outcome, client: str, started: float) -> None:
    """A backend answered: count it now, and its duration when the last byte has gone."""
    backend = outcome.backend
    first = time.perf_counter() - started
    metrics.decisions.labels(outcome.rule).inc()
    metrics.requests.labels(outcome.rule, backend, "ok", client).inc()
    metrics.first_byte.labels(backend).observe(first)
    _count_passed(metrics, outcome.passed, backend)
    for action in outcome.handoff.actions if outcome.handoff else ():
        metrics.handoffs.labels(backend, action).inc()
    reply = outcome.reply
    if not reply.streaming:
        metrics.duration.labels(backend, "false").observe(first)
        _count_tokens(metrics, backend, reply.usage)
        _count_tool_calls(metrics, backend, reply.tool_calls)
        _count_runaway(metrics, backend, reply)
        return
    first_at = time.perf_counter()

    def finished() -> None:
        now = time.perf_counter()
        metrics.duration.labels(backend, "true").observe(now - started)
        _count_tokens(metrics, backend, reply.usage)
        _count_tool_calls(metrics, backend, reply.tool_calls)
        _count_runaway(metrics, backend, reply)
        if reply.usage.output > 1 and now > first_at:
            metrics.output_rate.labels(backend).observe(reply.usage.output / (now - first_at))

    reply.on_close.append(finished)


def _count_passed(metrics: Metrics, passed: list[tuple[str, str]], answered_by: str) -> None:
    for name, kind in passed:
        metrics.fallbacks.labels(name, answered_by, kind).inc()
        if kind == "tool_call":
            metrics.tool_calls.labels(name, "failed").inc()
        if kind == "runaway":
            metrics.runaways.labels(name, "repetition").inc()


def _count_runaway(metrics: Metrics, backend: str, reply: Reply) -> None:
    if reply.runaway is not None and reply.runaway.stopped:
        metrics.runaways.labels(backend, reply.runaway.stopped).inc()


def _count_tool_calls(metrics: Metrics, backend: str, outcomes: list[str]) -> None:
    for outcome in outcomes:
        metrics.tool_calls.labels(backend, outcome).inc()


def _count_tokens(metrics: Metrics, backend: str, usage: Usage) -> None:
    for kind, n in usage.counts():
        metrics.tokens.labels(backend, kind).inc(n)


def failed(metrics: Metrics, failure: DispatchFailed, client: str) -> None:
    metrics.decisions.labels(failure.rule).inc()
    metrics.requests.labels(failure.rule, "none", outcome_label(failure.status), client).inc()
    _count_passed(metrics, failure.passed, "none")


def client_gone(metrics: Metrics, client: str) -> None:
    metrics.requests.labels("none", "none", "client_gone", client).inc()


def refused(metrics: Metrics, status: int, client: str) -> None:
    """Refused before any routing: no good team key (403), an invalid body (400, 413), or a fault
    of the gateway's own (5xx)."""
    outcome = (
        "overloaded"
        if status == 529
        else "error"
        if status >= 500
        else "unauthorized"
        if status in (401, 403)
        else "invalid"
    )
    metrics.requests.labels("none", "none", outcome, client).inc()
