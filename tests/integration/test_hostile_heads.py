"""Hostile request heads against the running gateway, on raw sockets: CR/LF and NUL in header
values, 1,000 headers, a 64 KB header line, slowloris and silent connections. Each gets a clean
4xx and a closed connection within the limits (router/server/http_limits.py), and everyone else is
served meanwhile."""

from __future__ import annotations

import socket
import statistics
import time

import httpx
import pytest

from tests.harness.procs import Process

HEADER_TIMEOUT = "2"


@pytest.fixture
def gateway(start_ccgate, text_llama: Process) -> Process:
    return start_ccgate(
        {"local": {"kind": "llamacpp", "url": text_llama.url}}, env={"CCGATE_HEADER_TIMEOUT": HEADER_TIMEOUT}
    )


def answer_to(gw: Process, data: bytes, wait: float = 60) -> bytes:
    """What the gateway answers to `data`, read until it closes the connection."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=wait) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"X-A: a\rb\r\n", 400),
        (b"X-A: a\x00b\r\n", 400),
        (b"".join(b"X-H%d: v\r\n" % i for i in range(1000)), 431),
        (b"X-Big: " + b"a" * 65536 + b"\r\n", 431),
    ],
    ids=["cr-in-value", "nul-in-value", "1000-headers", "64KB-line"],
)
def test_a_bad_head_is_a_clean_4xx_and_a_closed_connection(gateway: Process, head: bytes, status: int) -> None:
    answer = answer_to(gateway, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
    assert status_of(answer) == status, answer[:200]  # answer_to returned: the connection was closed
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_slowloris_and_silent_connections_are_closed_and_others_are_served(gateway: Process) -> None:
    attackers = []
    for i in range(100):
        s = socket.create_connection(("127.0.0.1", gateway.port), timeout=60)
        if i % 2:
            s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Ty")  # and then nothing more
        attackers.append(s)
    latencies = []
    with httpx.Client(timeout=30) as client:
        for _ in range(20):
            started = time.perf_counter()
            r = client.post(
                gateway.url + "/v1/messages",
                json={"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
            )
            latencies.append(time.perf_counter() - started)
            assert r.status_code == 200
    print(f"p50 {statistics.median(latencies) * 1000:.1f} ms with 100 idle/slow heads open")
    for s in attackers:  # each is answered 408 and closed by the gateway (recv returns, then EOF)
        answer = s.recv(65536)
        assert status_of(answer) == 408, answer[:200]
        assert f"within {HEADER_TIMEOUT} s".encode() in answer
        s.close()


@pytest.mark.parametrize("how", ["stalls", "trickles"])
def test_a_body_that_stalls_or_trickles_is_closed_and_others_are_served(start_ccgate, text_llama: Process, how: str):
    """A head within limits, then a body that stops coming (a gap over CCGATE_HEADER_TIMEOUT), or
    comes a byte at a time for longer than CCGATE_BODY_TIMEOUT: 408, the connection closed."""
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": text_llama.url}},
        env={"CCGATE_HEADER_TIMEOUT": HEADER_TIMEOUT, "CCGATE_BODY_TIMEOUT": "4"},
    )
    head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gw.port), timeout=60) as s:
        s.sendall(head + b'{"model": "m", ')
        answer = b""
        if how == "trickles":  # a byte a second: never a gap of 2 s, never the whole body
            s.settimeout(1.0)
            while not answer:
                try:
                    answer = s.recv(65536)
                except TimeoutError:
                    s.sendall(b" ")
        s.settimeout(60)
        while chunk := s.recv(65536):
            answer += chunk
    assert status_of(answer) == 408, answer[:200]
    said = b"within 4 s" if how == "trickles" else f"stalled for {HEADER_TIMEOUT} s".encode()
    assert said in answer, answer[:300]
    assert httpx.post(gw.url + "/v1/messages", json={**_ask(), "max_tokens": 4}, timeout=30).status_code == 200
    assert "Traceback" not in gw.log.read_text()


def _ask() -> dict:
    return {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
