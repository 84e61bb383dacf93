"""Passive health: what real requests showed counts until a request or an active check says otherwise."""

from __future__ import annotations

from router.backends.base import Probe
from router.state.store import BreakerSettings, MemoryState

NOT_PROBED = Probe(True, "not probed", checked=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(clock: Clock, **kw: object) -> MemoryState:
    return MemoryState(
        ["fallback"],
        {"fallback": BreakerSettings(3, 10)},
        clock=clock,
        wall=lambda: 0.0,
        **kw,  # type: ignore[arg-type]
    )


def test_an_unprobed_backend_stays_down_after_a_refused_connection() -> None:
    clock = Clock()
    s = store(clock)
    s.failed("fallback", "connection refused", unreachable=True)
    for _ in range(5):  # polls that check nothing say nothing against it
        clock.now += 1
        s.observe("fallback", NOT_PROBED)
    state = s.snapshot()["fallback"]
    assert not state.healthy and not state.available
    assert state.detail.startswith("unreachable since ") and state.detail.endswith(": connection refused")
    assert s.suspect("fallback")  # so the poller checks it actively


def test_an_active_check_that_reaches_it_brings_it_back() -> None:
    clock = Clock()
    s = store(clock, passive_window=1.0)
    s.failed("fallback", "connection refused", unreachable=True)
    s.observe("fallback", Probe(False, "connection refused"))
    assert not s.snapshot()["fallback"].healthy
    clock.now += 2
    s.observe("fallback", Probe(True, "up (/v1/models answered HTTP 401)"))
    state = s.snapshot()["fallback"]
    assert state.healthy and state.detail == "up (/v1/models answered HTTP 401)"
    assert not s.suspect("fallback")


def test_a_probe_right_after_the_failure_does_not_overrule_it() -> None:
    """A probed backend takes the worse of the two for a short window."""
    clock = Clock()
    s = store(clock, passive_window=3.0)
    s.failed("fallback", "connection refused", unreachable=True)
    clock.now += 1
    s.observe("fallback", Probe(True, "up"))
    assert not s.snapshot()["fallback"].healthy
    clock.now += 3
    s.observe("fallback", Probe(True, "up"))
    assert s.snapshot()["fallback"].healthy


def test_a_request_that_gets_through_clears_it() -> None:
    clock = Clock()
    s = store(clock)
    s.failed("fallback", "connection refused", unreachable=True)
    s.succeeded("fallback")
    assert s.snapshot()["fallback"].available


def test_with_nothing_to_recheck_it_the_mark_lapses() -> None:
    clock = Clock()
    s = store(clock, passive_hold=10.0)
    s.failed("fallback", "connection refused", unreachable=True)
    clock.now += 9
    assert not s.snapshot()["fallback"].healthy
    clock.now += 2
    assert s.snapshot()["fallback"].healthy


def test_an_open_breaker_makes_it_unavailable_and_says_why() -> None:
    clock = Clock()
    s = store(clock)
    for _ in range(3):
        s.failed("fallback", "HTTP 500: boom")
    state = s.snapshot()["fallback"]
    assert state.healthy and state.breaker == "open" and not state.available
    assert state.breaker_detail.startswith("breaker open since ")
    assert state.breaker_detail.endswith("after 3 failures (last: HTTP 500: boom)")
    clock.now += 11
    state = s.snapshot()["fallback"]
    assert state.breaker == "half_open" and state.available  # one request may try


def test_a_failed_start_up_check_keeps_it_down_until_a_check_succeeds() -> None:
    clock = Clock()
    s = store(clock)
    s.observe("fallback", Probe(False, "connection refused"))
    s.observe("fallback", NOT_PROBED)
    state = s.snapshot()["fallback"]
    assert not state.healthy and state.detail.startswith("down since ")
    assert s.suspect("fallback")


def test_a_request_that_ended_while_the_probe_was_out_is_not_someone_elses_load() -> None:
    """llama-server counted our request (processing 1); it ended before the answer came back."""
    s = MemoryState(["local"])
    end = s.begin("local")
    ours = s.ours("local")
    end()
    s.observe("local", Probe(True, processing=1, slots=1), ours_before=ours)
    assert s.snapshot()["local"].queue_depth == 0
