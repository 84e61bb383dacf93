"""What one request adds to the metrics, from what dispatch reports."""

from __future__ import annotations

import time

from router.dispatch import DispatchFailed, Outcome
from router.telemetry.metrics import Metrics


def outcome_label(status: int) -> str:
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
    for name, kind in outcome.passed:
        metrics.fallbacks.labels(name, kind).inc()
    if outcome.reply.streaming:
        outcome.reply.on_close.append(
            lambda: metrics.duration.labels(backend, "true").observe(time.perf_counter() - started)
        )
    else:
        metrics.duration.labels(backend, "false").observe(first)


def failed(metrics: Metrics, failure: DispatchFailed, client: str) -> None:
    metrics.decisions.labels(failure.rule).inc()
    metrics.requests.labels(failure.rule, "none", outcome_label(failure.status), client).inc()
    for name, kind in failure.passed:
        metrics.fallbacks.labels(name, kind).inc()


def client_gone(metrics: Metrics, client: str) -> None:
    metrics.requests.labels("none", "none", "client_gone", client).inc()
