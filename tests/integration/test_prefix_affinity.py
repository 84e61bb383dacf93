"""Prefix affinity across gateway replicas sharing a real Redis, against real llama-servers."""

from __future__ import annotations

import secrets
import threading
from contextlib import suppress
from pathlib import Path

import httpx
import pytest

from tests.harness.procs import Process, start_redis
from tests.harness.sessions import conversation
from tests.harness.wait import wait_until
from tests.integration.test_metrics import scrape, value
from tests.integration.test_passthrough import ask


def pool_policy(prefix: str) -> dict:
    return {"rules": [{"name": "default", "to": [["a", "b"]]}], "state": {"key_prefix": prefix}}


@pytest.fixture
def two_servers(start_llama_server) -> dict[str, dict]:
    a = start_llama_server("text", "-np", "2", "--slots", "--metrics", "--cache-ram", "0")
    b = start_llama_server("text", "-np", "2", "--slots", "--metrics", "--cache-ram", "0")
    return {"a": {"kind": "llamacpp", "url": a.url}, "b": {"kind": "llamacpp", "url": b.url}}


def test_two_replicas_send_a_conversation_back_to_its_slot(start_ccgate, two_servers: dict, redis_url: str) -> None:
    extra = pool_policy(f"test-{secrets.token_hex(4)}:")
    replicas = [start_ccgate(two_servers, env={"REDIS_URL": redis_url}, extra=extra) for _ in range(2)]
    places: dict[str, set[tuple[str, str]]] = {}
    for session in ("alpha", "beta"):
        for turn, body in enumerate(conversation(session, 3)):
            gw = replicas[turn % 2]  # turns alternate between the replicas
            r = httpx.post(gw.url + "/v1/messages", json=body, timeout=300)
            assert r.status_code == 200, r.text
            places.setdefault(session, set()).add((r.headers["x-ccgate-backend"], r.headers["x-ccgate-slot"]))
            usage = r.json()["usage"]
            if turn:  # llama.cpp reused the slot's KV cache for everything but the new turn
                assert usage["cache_read_input_tokens"] > 10 * usage["input_tokens"], usage
    assert len(places["alpha"]) == 1 and len(places["beta"]) == 1, places
    assert places["alpha"] != places["beta"]  # a new conversation takes a free slot, not alpha's
    samples = scrape(replicas[1])
    hits = sum(value(samples, "ccgate_prefix_requests_total", backend=b, result="hit") for b in ("a", "b"))
    assert hits >= 2 and value(samples, "ccgate_state_redis_up") == 1


def test_in_flight_counts_are_shared_and_a_dead_replica_stops_counting(
    start_ccgate, start_llama_server, text_llama: Process, redis_url: str
) -> None:
    looping = start_llama_server("busy", "-np", "1")
    backends = {
        "local": {"kind": "llamacpp", "url": looping.url, "max_concurrent": 1},
        "fallback": {"kind": "anthropic", "url": text_llama.url},
    }
    extra = {"state": {"key_prefix": f"test-{secrets.token_hex(4)}:"}}
    first = start_ccgate(backends, env={"REDIS_URL": redis_url}, extra=extra)
    # The second replica does not poll llama-server: what it knows of the load comes from Redis.
    second = start_ccgate(backends, env={"REDIS_URL": redis_url, "CCGATE_HEALTH_INTERVAL": "0"}, extra=extra)

    def hold() -> None:
        body = {**ask(), "stream": True, "max_tokens": 200_000}
        with suppress(httpx.HTTPError), httpx.stream("POST", first.url + "/v1/messages", json=body, timeout=60) as r:
            for _ in r.iter_bytes():
                pass  # until the replica is killed

    threading.Thread(target=hold, daemon=True).start()
    wait_until(
        lambda: value(scrape(second), "ccgate_backend_queue_depth", backend="local") == 1,
        "the second replica saw the first one's request (Redis)",
    )
    r = httpx.post(second.url + "/v1/messages", json=ask(), timeout=30)
    assert r.headers["x-ccgate-backend"] == "fallback" and "local: busy 1/1" in r.headers["x-ccgate-fallback-reason"]

    first.kill()  # no clean-up: its counts must stop counting on their own
    wait_until(
        lambda: value(scrape(second), "ccgate_backend_queue_depth", backend="local") == 0,
        "the dead replica's count expired",
    )
    wait_until(
        lambda: httpx.post(second.url + "/v1/messages", json=ask(), timeout=30).headers["x-ccgate-backend"] == "local",
        "local took requests again",
    )


def test_redis_stopped_and_restarted_mid_run_fails_no_request(
    start_ccgate, owned, two_servers: dict, logdir: Path
) -> None:
    redis = owned(start_redis(logdir))
    gw = start_ccgate(two_servers, env={"REDIS_URL": f"redis://127.0.0.1:{redis.port}/0"}, extra=pool_policy("ccgate:"))
    statuses = []
    for i in range(36):
        if i == 10:
            redis.kill()
        if i == 22:
            redis = owned(start_redis(logdir, port=redis.port))
        body = conversation("gamma", 1)[0] if i % 6 == 0 else {**ask(), "model": f"claude-{i}"}
        statuses.append(httpx.post(gw.url + "/v1/messages", json=body, timeout=300).status_code)
    assert statuses == [200] * 36
    wait_until(lambda: value(scrape(gw), "ccgate_state_redis_up") == 1, "ccgate saw redis back")
    samples = scrape(gw)
    assert value(samples, "ccgate_state_redis_errors_total") >= 1
    log = gw.log.read_text()
    assert log.count("unavailable (ConnectionError") == 1 and "redis is back" in log


def test_a_breaker_one_replica_opened_is_open_for_all(
    start_ccgate, start_llama_server, text_llama: Process, redis_url: str
) -> None:
    broken = start_llama_server("broken", "-np", "1")
    backends = {
        "local": {"kind": "llamacpp", "url": broken.url, "breaker": {"failures": 2, "cooldown": 30}},
        "fallback": {"kind": "anthropic", "url": text_llama.url},
    }
    extra = {"state": {"key_prefix": f"test-{secrets.token_hex(4)}:"}}
    first = start_ccgate(backends, env={"REDIS_URL": redis_url}, extra=extra)
    second = start_ccgate(backends, env={"REDIS_URL": redis_url}, extra=extra)
    for _ in range(2):  # two 500s from the broken model: the first replica opens its breaker
        r = httpx.post(first.url + "/v1/messages", json=ask(), timeout=30)
        assert r.headers["x-ccgate-backend"] == "fallback" and "HTTP 500" in r.headers["x-ccgate-fallback-reason"]
    wait_until(
        lambda: value(scrape(second), "ccgate_backend_breaker_state", backend="local") == 2,
        "the second replica saw the breaker open",
    )
    r = httpx.post(second.url + "/v1/messages", json=ask(), timeout=30)
    assert r.headers["x-ccgate-fallback-reason"] == "local: breaker open"


def test_count_tokens_uses_the_measured_count_of_a_known_prefix(start_ccgate, text_llama: Process) -> None:
    """An OpenAI-dialect backend has no token counter: once a prompt's prefix was processed, its
    measured count replaces the byte estimate for that part."""
    gw = start_ccgate({"local": {"kind": "openai", "url": text_llama.url + "/v1"}})
    first, second = conversation(f"count-{secrets.token_hex(2)}", 2)
    exact = httpx.post(text_llama.url + "/v1/messages/count_tokens", json=second, timeout=60).json()["input_tokens"]
    guessed = httpx.post(gw.url + "/v1/messages/count_tokens", json=second, timeout=60).json()["input_tokens"]
    assert httpx.post(gw.url + "/v1/messages", json=first, timeout=300).status_code == 200
    informed = httpx.post(gw.url + "/v1/messages/count_tokens", json=second, timeout=60).json()["input_tokens"]
    assert abs(informed - exact) < abs(guessed - exact)
    assert abs(informed - exact) / exact < 0.05, (informed, exact, guessed)
