"""The policy engine against real llama-servers: spillover when busy, failover with a breaker."""

from __future__ import annotations

import httpx

from tests.harness.procs import Process, start_llama
from tests.harness.wait import wait_until
from tests.integration.test_fallback import FALLBACK_TEXT, answer
from tests.integration.test_metrics import scrape, value
from tests.integration.test_passthrough import ask

LONG = {**ask(), "max_tokens": 250_000, "stream": True}


def backend_of(gw: Process) -> str:
    r = httpx.post(gw.url + "/v1/messages", json={**ask(), "max_tokens": 20}, timeout=30)
    assert r.status_code == 200, r.text
    return r.headers["x-ccgate-backend"]


def test_spillover_when_the_only_slot_is_busy_and_back_when_free(
    start_ccgate, start_llama_server, text_llama: Process
) -> None:
    local = start_llama_server("busy", "-np", "1", "--metrics")
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": local.url}, "fallback": {"kind": "anthropic", "url": text_llama.url}}
    )
    assert backend_of(gw) == "local"
    with httpx.stream("POST", gw.url + "/v1/messages", json=LONG, timeout=30) as long_run:
        lines = long_run.iter_lines()
        next(lines)
        assert long_run.headers["x-ccgate-backend"] == "local"
        r = httpx.post(gw.url + "/v1/messages", json={**ask(), "max_tokens": 20}, timeout=30)
        assert r.headers["x-ccgate-backend"] == "fallback"
        assert r.headers["x-ccgate-fallback-reason"] == "local: busy 1/1"
        assert r.json()["content"][0]["text"] == FALLBACK_TEXT
    wait_until(lambda: backend_of(gw) == "local", "local took requests again after its slot was freed")


def test_spillover_on_load_from_outside_the_gateway(start_ccgate, start_llama_server, text_llama: Process) -> None:
    """Another client uses llama-server directly: only its own /metrics can tell, within a poll."""
    local = start_llama_server("busy", "-np", "1", "--metrics")
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": local.url}, "fallback": {"kind": "anthropic", "url": text_llama.url}}
    )
    with httpx.stream("POST", local.url + "/v1/messages", json=LONG, timeout=30) as direct:
        lines = direct.iter_lines()  # kept: dropping it would close the connection
        next(lines)
        wait_until(
            lambda: value(scrape(gw), "ccgate_backend_queue_depth", backend="local") == 1,
            "a poll saw the other client's request on local",
        )
        assert backend_of(gw) == "fallback"


def test_failover_opens_the_breaker_and_notices_the_restart(
    start_ccgate, owned, models, logdir, text_llama: Process
) -> None:
    local = owned(start_llama(models["tool"], logdir, "-np", "1"))
    port = local.port
    gw = start_ccgate(
        {
            "local": {"kind": "llamacpp", "url": local.url, "breaker": {"failures": 1, "cooldown": 1}},
            "fallback": {"kind": "anthropic", "url": text_llama.url},
        },
        env={"CCGATE_HEALTH_INTERVAL": "5"},  # slow polls: the failed request itself must notice
    )
    assert backend_of(gw) == "local"
    local.kill()
    headers, text = answer(gw, stream=True)
    assert headers["x-ccgate-backend"] == "fallback" and text == FALLBACK_TEXT
    assert "local: connection refused" in headers["x-ccgate-fallback-reason"]
    state = httpx.get(gw.url + "/readyz").json()["backends"]["local"]
    assert state["breaker"] == "open" and state["healthy"] is False

    owned(Process(local.name, local.args, port, local.log).start("/health"))
    wait_until(lambda: backend_of(gw) == "local", "the restarted llama-server was used again", every=0.3)
    assert httpx.get(gw.url + "/readyz").json()["backends"]["local"]["breaker"] == "closed"
