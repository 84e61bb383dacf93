"""A client that stops reading a fast stream holds the upstream back: ccgate buffers no more than
the sockets do, its memory stays flat, and the upstream request ends when the client leaves."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.procs import Process, start_hostile
from tests.harness.wait import wait_until

MIB = 1024 * 1024


@pytest.fixture
def firehose(logdir: Path) -> Iterator[Process]:
    proc = start_hostile(logdir)
    yield proc
    proc.stop()


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def sent(upstream: Process) -> int:
    return _status(upstream)["sent"]


def stalled(upstream: Process, readings: list[int]) -> bool:
    """The upstream got nothing more out over the last few looks: it is being held back."""
    readings.append(sent(upstream))
    return len(readings) >= 5 and readings[-1] > 0 and len(set(readings[-5:])) == 1


def test_a_client_that_stops_reading_holds_the_upstream_back(start_ccgate, firehose: Process) -> None:
    gw = start_ccgate({"up": {"kind": "anthropic", "url": firehose.url, "api_key": "x"}})
    assert gw.proc is not None
    before = rss(gw.proc.pid)
    body = json.dumps(
        {"model": "firehose", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    )
    reader = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    head = f"POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
    reader.sendall(head.encode() + b"\r\n\r\n" + body.encode())
    assert reader.recv(4096).startswith(b"HTTP/1.1 200")  # the stream started; now nobody reads it

    readings: list[int] = []
    wait_until(lambda: stalled(firehose, readings), "the upstream to be held back", every=0.5)
    held = readings[-1]
    grown = rss(gw.proc.pid) - before
    print(f"upstream held back after {held / MIB:.1f} MiB; ccgate RSS grew {grown / MIB:.1f} MiB")
    assert held < 64 * MIB  # the sockets' buffers, not the whole stream (it has no end)
    assert grown < 48 * MIB

    reader.close()  # the client leaves: ccgate must hang up on the upstream too
    wait_until(lambda: _status(firehose)["open"] == 0, "the upstream stream to be closed by ccgate")
    assert httpx.get(gw.url + "/healthz").status_code == 200


def _status(upstream: Process) -> dict:
    return httpx.get(upstream.url + "/_sent", timeout=10).json()
