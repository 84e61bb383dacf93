"""Health tells the truth: a backend a real request could not reach stays down until a check
reaches it; `/readyz`, `ccgate_backend_healthy` and the start-up lines say so; an open breaker
counts; every request is counted, the refused ones too, and known series start at 0."""

from __future__ import annotations

import re
import socket
import time

import anthropic
import httpx

from tests.harness.procs import Process
from tests.harness.wait import wait_until
from tests.integration.test_metrics import scrape, value
from tests.integration.test_passthrough import ask

UNREACHABLE = re.compile(r"^unreachable since \d\d:\d\d:\d\d: connection refused$")


def closed_port() -> int:
    """A port that listened, then closed: connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        return s.getsockname()[1]


def readyz(gw: Process) -> httpx.Response:
    return httpx.get(gw.url + "/readyz", timeout=10)


def test_an_unprobed_backend_that_refused_stays_down_until_a_check_reaches_it(
    start_ccgate, start_llama_server, owned
) -> None:
    """The Anthropic-dialect fallback has no health path: only real requests and, once one failed,
    a cheap check tell its health. The old gateway forgot the failure at the next poll."""
    fallback = start_llama_server("text", "-np", "1")
    gw = start_ccgate(
        {
            "local": {"kind": "llamacpp", "url": f"http://127.0.0.1:{closed_port()}"},
            "fallback": {"kind": "anthropic", "url": fallback.url},
        }
    )
    before = readyz(gw)
    assert before.status_code == 200 and before.json()["backends"]["fallback"]["healthy"] is True

    fallback.stop()  # the port that answered a moment ago now refuses
    client = anthropic.Anthropic(base_url=gw.url, api_key="test")  # the SDK's own retries, as users have them
    try:
        client.messages.create(**ask())
        raise AssertionError("expected a 529")
    except anthropic.APIStatusError as exc:
        assert exc.status_code == 529

    ready = readyz(gw)
    assert ready.status_code == 503
    state = ready.json()["backends"]["fallback"]
    assert state["healthy"] is False and UNREACHABLE.match(state["detail"]), state
    assert value(scrape(gw), "ccgate_backend_healthy", backend="fallback") == 0
    # It stays so: polls run every 0.2 s here, and the old gateway called it healthy at the next
    # one. (A stability check, not a wait: on a slower machine it checks fewer polls, never fails.)
    until = time.monotonic() + 2
    while time.monotonic() < until:
        assert readyz(gw).status_code == 503
    assert "backend fallback is up" not in gw.log.read_text()

    owned(Process(fallback.name, fallback.args, fallback.port, fallback.log).start("/health"))
    wait_until(lambda: readyz(gw).status_code == 200, "an active check found the fallback reachable again")
    assert readyz(gw).json()["backends"]["fallback"]["healthy"] is True
    assert value(scrape(gw), "ccgate_backend_healthy", backend="fallback") == 1
    assert httpx.post(gw.url + "/v1/messages", json=ask(), timeout=60).headers["x-ccgate-backend"] == "fallback"


def test_start_up_lines_say_an_unreachable_backend_is_down(start_ccgate) -> None:
    port = closed_port()
    gw = start_ccgate({"fallback": {"kind": "anthropic", "url": f"http://127.0.0.1:{port}"}})
    line = next(line for line in gw.log.read_text().splitlines() if "backend fallback:" in line)
    assert re.search(r"DOWN \(down since \d\d:\d\d:\d\d: connection refused\)", line), line
    assert readyz(gw).status_code == 503
    assert "(not probed)" not in gw.log.read_text()


def test_an_open_breaker_is_not_ready(start_ccgate, start_llama_server) -> None:
    """Reachable, but every request fails (llama-server's grammar failure, HTTP 500): after
    `breaker.failures` of them the backend takes no requests, and readiness says so and why."""
    broken = start_llama_server("broken", "-np", "1")
    gw = start_ccgate({"only": {"kind": "anthropic", "url": broken.url, "breaker": {"failures": 2, "cooldown": 600}}})
    assert readyz(gw).status_code == 200
    for _ in range(2):
        assert httpx.post(gw.url + "/v1/messages", json=ask(), timeout=60).status_code >= 500
    ready = readyz(gw)
    assert ready.status_code == 503
    state = ready.json()["backends"]["only"]
    assert state["healthy"] is True and state["available"] is False and state["breaker"] == "open"
    assert re.match(r"breaker open since \d\d:\d\d:\d\d after 2 failures \(last: HTTP 500", state["breaker_detail"])
    assert value(scrape(gw), "ccgate_backend_healthy", backend="only") == 0


def test_refused_requests_are_counted_and_known_series_start_at_zero(start_ccgate, tool_llama: Process) -> None:
    gw = start_ccgate(
        {
            "local": {"kind": "llamacpp", "url": tool_llama.url},
            "fallback": {"kind": "anthropic", "url": tool_llama.url},
        },
        env={"CCGATE_MAX_BODY_BYTES": "4096"},
    )
    samples = scrape(gw)
    for labels in (
        {"rule": "default", "backend": "none", "outcome": "overloaded", "client": "claude-cli"},
        {"rule": "none", "backend": "none", "outcome": "invalid", "client": "other"},
        {"rule": "none", "backend": "none", "outcome": "client_gone", "client": "opencode"},
    ):
        assert samples[("ccgate_requests_total", tuple(sorted(labels.items())))] == 0, labels
    assert samples[("ccgate_policy_reloads_total", (("result", "rejected"),))] == 0
    assert samples[("ccgate_policy_reloads_total", (("result", "ok"),))] == 0
    fallback = (("from_backend", "local"), ("reason", "busy"), ("to_backend", "fallback"))
    assert samples[("ccgate_fallbacks_total", fallback)] == 0
    assert samples[("ccgate_tool_calls_total", (("backend", "local"), ("outcome", "converted")))] == 0

    ua = {"user-agent": "claude-cli/2.1.197 (external, cli)"}
    bad = httpx.post(gw.url + "/v1/messages", content=b"{not json", headers=ua)
    assert bad.status_code == 400
    big = httpx.post(gw.url + "/v1/messages", json={**ask(), "messages": [{"role": "user", "content": "x" * 8000}]})
    assert big.status_code == 413
    samples = scrape(gw)
    assert (
        value(samples, "ccgate_requests_total", rule="none", backend="none", outcome="invalid", client="claude-cli")
        == 1
    )
    assert value(samples, "ccgate_requests_total", rule="none", backend="none", outcome="invalid", client="other") == 1
