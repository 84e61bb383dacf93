"""Prometheus metrics: `ccgate_*`, base units, bounded labels (never session ids, keys or free text).

One registry per app, not prometheus-client's global one, so tests and several apps in one
process do not share counters. One process per replica is the design: `ccgate serve` runs a
single uvicorn worker, so no multiprocess mode is needed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from router.policy.features import CLIENT_KINDS
from router.policy.schema import Policy
from router.policy.snapshot import BackendSnapshot
from router.protocol.usage import TOKEN_KINDS, Usage

# LLM latencies: 10 ms (a cached prompt) to minutes (a cold 20k-token prompt on a CPU).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}

# Label values known in advance, so a healthy day's panels show 0 rather than No data.
CLIENTS = tuple(dict.fromkeys([kind for _, kind in CLIENT_KINDS] + ["other"]))
DISPATCH_FAILURES = ("overloaded", "timeout", "upstream_error", "rejected", "limited")  # a rule matched, no answer
EDGE_FAILURES = ("invalid", "unauthorized", "client_gone", "error")  # refused at the door, client left, fault
SKIP_REASONS = ("unhealthy", "breaker", "context", "capability", "busy", "forbidden", "budget", "share")
ATTEMPT_FAILURES = ("connect", "timeout", "5xx", "4xx", "429", "529", "context", "broken", "tool_call", "runaway")
HANDOFF_ACTIONS = ("dropped_thinking", "thinking_off", "renamed_ids")
TOOL_CALL_OUTCOMES = ("passed", "repaired", "converted", "failed", "unchecked")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # What is read at scrape time from this process. With workers (router/server/workers.py) the
        # rest is in multi-process files every worker's scrape sums; this stays the worker's own.
        self.live = CollectorRegistry(auto_describe=True) if multiprocess_dir() else self.registry
        r = self.registry
        self.requests = Counter(
            "ccgate_requests",
            "Requests answered, by the rule that matched, the backend that answered and the outcome.",
            ["rule", "backend", "outcome", "client"],
            registry=r,
        )
        self.duration = Histogram(
            "ccgate_request_duration_seconds",
            "Time from the request to its last byte.",
            ["backend", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_byte = Histogram(
            "ccgate_time_to_first_byte_seconds",
            "Time from the request to the backend's first byte (prompt processing included).",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "ccgate_fallbacks",
            "Backends passed over for a request, why, and which backend answered instead (none: nobody).",
            ["from_backend", "to_backend", "reason"],
            registry=r,
        )
        self.tokens = Counter(
            "ccgate_tokens",
            "Tokens of answered requests: input (not from cache), cached (prompt cache reads), cache_write "
            "(5-minute cache writes), cache_write_1h (1-hour cache writes), output (counted from what was "
            "relayed when an answer was cut short before its final count).",
            ["backend", "kind"],
            registry=r,
        )
        self.output_rate = Histogram(
            "ccgate_output_tokens_per_second",
            "Generation speed of streamed answers: output tokens over the time from first to last byte.",
            ["backend"],
            buckets=(1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 250, 500, 1000, 2500),
            registry=r,
        )
        self.tool_calls = Counter(
            "ccgate_tool_calls",
            "Tool calls of guarded backends: passed (valid as sent), repaired (arguments or name fixed), "
            "converted (written as text, turned into a call), failed (rejected: rerouted, or the stream ended), "
            "unchecked (passed as sent: the tool's schema cannot be used, e.g. a $ref to elsewhere).",
            ["backend", "outcome"],
            registry=r,
        )
        self.prefix = Counter(
            "ccgate_prefix_requests",
            "Requests by whether the chosen backend/slot already held part of the prompt (prefix index).",
            ["backend", "result"],
            registry=r,
        )
        self.prefix_tokens = Counter(
            "ccgate_prefix_reused_tokens",
            "Prompt tokens the chosen slot already held, by the prefix index: processing saved.",
            ["backend"],
            registry=r,
        )
        self.slot_files = Counter(
            "ccgate_slot_files",
            "llama-server slot saves and restores (--slot-save-path) by result: a save keeps a prefix "
            "another conversation takes the slot from, a restore puts a returning conversation's back.",
            ["backend", "action", "result"],
            registry=r,
        )
        self.slot_file_seconds = Histogram(
            "ccgate_slot_file_seconds",
            "Time a slot save or restore took, the request waiting on it.",
            ["backend", "action"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.redis_errors = Counter(
            "ccgate_state_redis_errors", "Failed Redis operations (routing then uses local state).", registry=r
        )
        self.redis_round_trips = Counter(
            "ccgate_state_redis_round_trips",
            "Requests sent to Redis: one command, or one pipeline of them (a routing decision is one).",
            registry=r,
        )
        self.redis_up = Gauge(
            "ccgate_state_redis_up",
            "1 while shared state in Redis works; 0 when local only.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.runaways = Counter(
            "ccgate_runaway",
            "Answers the runaway guard stopped, by why: repetition (the model repeated itself) or markup "
            "(it wrote another family's end-of-turn markup: its turn had ended).",
            ["backend", "kind"],
            registry=r,
        )
        self.handoffs = Counter(
            "ccgate_handoffs",
            "Requests to the Anthropic API whose history a local model wrote part of, by what was done: "
            "dropped_thinking (its thinking blocks), thinking_off (the tool loop's last turn was local and "
            "had no thinking), renamed_ids (tool ids the API would refuse).",
            ["backend", "action"],
            registry=r,
        )
        self.team_tokens = Counter(
            "ccgate_team_tokens",
            "Tokens of answered requests per team (team keys) and backend: input, cached, cache_write, "
            "cache_write_1h, output; place: "
            "local (the team's llama.cpp box) or cloud. Never a key or a person: a few series per team.",
            ["team", "backend", "place", "kind"],
            registry=r,
        )
        self.limited = Counter(
            "ccgate_limited",
            "Requests refused with 429 by a team key's limit, per team and limit (requests, tokens).",
            ["team", "limit"],
            registry=r,
        )
        self.waits = Histogram(
            "ccgate_queue_wait_seconds",
            "How long requests of keys with when_busy: wait waited for a local slot.",
            ["backend"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
            registry=r,
        )
        self.waiting = Gauge(
            "ccgate_queue_waiting",
            "Requests of keys with when_busy: wait now waiting for a local slot, on this replica.",
            ["backend"],
            registry=r,
            multiprocess_mode="livesum",
        )
        # The process itself (RSS, open fds, CPU) and its event loop: what a leak shows in first.
        ProcessCollector(registry=self.live)
        self.live.register(_LoopTasks())
        self.decisions = Counter("ccgate_decisions", "Routing decisions by matched rule.", ["rule"], registry=r)
        self.reloads = Counter("ccgate_policy_reloads", "Policy reloads by result.", ["result"], registry=r)

    def start_at_zero(self, policy: Policy) -> None:
        """Create the series whose label values the policy fixes (called again on reload)."""
        for client in CLIENTS:
            for outcome in EDGE_FAILURES:
                self.requests.labels("none", "none", outcome, client)
            for rule in policy.rules:
                for outcome in DISPATCH_FAILURES:
                    self.requests.labels(rule.name, "none", outcome, client)
        for result in ("ok", "rejected"):
            self.reloads.labels(result)
        for team in policy.teams:
            for limit in ("requests", "tokens"):
                self.limited.labels(team, limit)
            for name, backend in policy.backends.items():
                for kind in TOKEN_KINDS:
                    self.team_tokens.labels(team, name, "local" if backend.kind == "llamacpp" else "cloud", kind)
        for name, backend in policy.backends.items():
            if backend.kind == "llamacpp":  # what a key with when_busy: wait queues for
                self.waiting.labels(name)
                self.waits.labels(name)
                self.prefix_tokens.labels(name)
                self.tokens.labels(name, "cached")
                for action in ("save", "restore"):
                    self.slot_file_seconds.labels(name, action)
                    for result in ("ok", "failed"):
                        self.slot_files.labels(name, action, result)
        for rule in policy.rules:
            self.decisions.labels(rule.name)
            targets = rule.targets
            for i, name in enumerate(targets):
                for to in (*targets[i + 1 :], "none"):
                    for reason in (*SKIP_REASONS, *ATTEMPT_FAILURES):
                        self.fallbacks.labels(name, to, reason)
        for name, config in policy.backends.items():
            if config.kind == "anthropic":
                for action in HANDOFF_ACTIONS:
                    self.handoffs.labels(name, action)
            if config.guards_runaways:
                for kind in ("repetition", "markup"):
                    self.runaways.labels(name, kind)
            if config.guards_tools:
                for outcome in TOOL_CALL_OUTCOMES:
                    self.tool_calls.labels(name, outcome)

    def count_team_usage(self, team: str, backend: str, cloud: bool, usage: Usage) -> None:
        place = "cloud" if cloud else "local"
        for kind, n in usage.counts():
            self.team_tokens.labels(team, backend, place, kind).inc(n)

    def count_slot_file(self, backend: str, action: str, result: str, seconds: float) -> None:
        self.slot_files.labels(backend, action, result).inc()
        self.slot_file_seconds.labels(backend, action).observe(seconds)

    def count_prefix(self, backend: str, reused: int) -> None:
        self.prefix.labels(backend, "hit" if reused else "miss").inc()
        if reused:
            self.prefix_tokens.labels(backend).inc(reused)

    def watch_backends(self, snapshot: Callable[[], Mapping[str, BackendSnapshot]]) -> None:
        """Export live backend state, read at scrape time."""
        self.live.register(_BackendState(snapshot))

    def exposition(self) -> bytes:
        """The Prometheus text of a scrape: this process's, or with workers every worker's."""
        if self.live is self.registry:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        return generate_latest(merged) + generate_latest(self.live)


def multiprocess_dir() -> str | None:
    """Where workers keep their metric values (set by the supervisor), or None in one process."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _LoopTasks(Collector):
    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("ccgate_event_loop_tasks", "asyncio tasks alive in the serving event loop.")
        family.add_metric([], _loop_tasks())
        yield family


class _BackendState(Collector):
    def __init__(self, snapshot: Callable[[], Mapping[str, BackendSnapshot]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        state = self.snapshot()
        families = {
            "in_flight": GaugeMetricFamily(
                "ccgate_backend_in_flight", "This gateway's requests in progress.", labels=["backend"]
            ),
            "queue": GaugeMetricFamily(
                "ccgate_backend_queue_depth", "Requests on the backend: ours plus other clients'.", labels=["backend"]
            ),
            "healthy": GaugeMetricFamily(
                "ccgate_backend_healthy",
                "1 when it can take requests: reachable by its last probe or request, and its breaker not open.",
                labels=["backend"],
            ),
            "breaker": GaugeMetricFamily(
                "ccgate_backend_breaker_state", "0 closed, 1 half-open, 2 open.", labels=["backend"]
            ),
            "slots": GaugeMetricFamily("ccgate_backend_slots", "llama-server's parallel slots.", labels=["backend"]),
        }
        for name, s in state.items():
            families["in_flight"].add_metric([name], s.in_flight)
            families["queue"].add_metric([name], s.queue_depth)
            families["healthy"].add_metric([name], 1 if s.available else 0)
            families["breaker"].add_metric([name], BREAKER_VALUES[s.breaker])
            if s.slots is not None:
                families["slots"].add_metric([name], s.slots)
        yield from families.values()


def _loop_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped outside the loop (a test reading the registry directly)
        return 0.0
