"""Backends that take a request and then go quiet, for the OpenAI dialects: a frozen llama-server
(SIGSTOP: the kernel still accepts the connection, nothing answers) before the first byte, and
one frozen in the middle of a stream. Timeouts fire, the next backend answers when there is one,
the client gets an error of its own dialect when there is not, and the slot is freed.

Health polling is off here, so the gateway still believes the frozen server is up and really
sends it the request (with polling on, it would skip it as unhealthy, which other tests cover)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.harness.procs import Process
from tests.integration.test_errors import assert_slots_free

NO_POLLING = {"CCGATE_HEALTH_INTERVAL": "0"}
EVERY_TIME = {"breaker": {"failures": 1000}}  # each request meets the timeout, not an open breaker
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


@pytest.fixture
def frozen(start_llama_server) -> Iterator[Process]:
    """A llama-server that will be stopped with SIGSTOP; resumed at the end whatever happens."""
    server = start_llama_server("text", "-np", "1", "--slots")
    yield server
    if server.running:
        server.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]


def freeze(server: Process) -> None:
    server.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]


def test_a_frozen_backend_times_out_and_the_next_one_answers(
    start_ccgate, frozen: Process, text_llama: Process
) -> None:
    gw = start_ccgate(
        {
            "frozen": {"kind": "llamacpp", "url": frozen.url, "timeouts": {"first_byte": 1}, **EVERY_TIME},
            "good": {"kind": "llamacpp", "url": text_llama.url},
        },
        env=NO_POLLING,
    )
    alone = start_ccgate(
        {"frozen": {"kind": "llamacpp", "url": frozen.url, "timeouts": {"first_byte": 1}, **EVERY_TIME}}, env=NO_POLLING
    )
    # a pool of equals; least_busy keeps the policy's order on a tie, so the frozen one goes first
    pool = start_ccgate(
        {
            "frozen": {"kind": "llamacpp", "url": frozen.url, "timeouts": {"first_byte": 1}, **EVERY_TIME},
            "good": {"kind": "llamacpp", "url": text_llama.url},
        },
        env=NO_POLLING,
        extra={"rules": [{"name": "pool", "to": [["frozen", "good"]], "pick": "least_busy"}]},
    )
    freeze(frozen)
    pooled = httpx.post(pool.url + "/v1/chat/completions", json=CHAT, timeout=60)
    assert pooled.status_code == 200 and pooled.headers["x-ccgate-backend"] == "good", pooled.text[:200]
    assert "frozen:" in pooled.headers["x-ccgate-fallback-reason"]
    for path, body in (
        ("/v1/chat/completions", CHAT),
        ("/v1/responses", {"model": "m", "input": "hi", "max_output_tokens": 16}),
    ):
        for stream in (False, True):
            r = httpx.post(gw.url + path, json={**body, "stream": stream}, timeout=60)
            assert r.status_code == 200 and r.headers["x-ccgate-backend"] == "good", (path, stream, r.text[:200])
            assert "frozen:" in r.headers["x-ccgate-fallback-reason"] and "1s" in r.headers["x-ccgate-fallback-reason"]
            nobody = httpx.post(alone.url + path, json={**body, "stream": stream}, timeout=60)
            assert nobody.status_code == 504, nobody.text[:200]
            assert nobody.json()["error"]["code"] == "timeout_error"  # OpenAI's shape, Anthropic's kind


def test_a_stream_whose_backend_freezes_ends_with_an_error_and_frees_the_slot(start_ccgate, start_llama_server) -> None:
    busy = start_llama_server("busy", "-np", "1", "--slots")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": busy.url, "timeouts": {"idle": 1}}}, env=NO_POLLING)
    lines: list[str] = []
    try:
        body = {**CHAT, "max_tokens": 200_000, "stream": True}
        with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                lines.append(line)
                if len(lines) == 20:
                    freeze(busy)
    finally:
        busy.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    payloads = [line[6:] for line in lines if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    error = json.loads(payloads[-2])["error"]
    assert "stalled mid-stream" in error["message"] and error["type"] == "server_error"
    assert_slots_free(busy, within=30)  # the gateway hung up; the resumed server notices and stops
