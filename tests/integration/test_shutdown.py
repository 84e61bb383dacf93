"""SIGTERM drains the gateway: /readyz says 503 at once, what is in flight finishes (streams
included) within CCGATE_SHUTDOWN_GRACE, then the listener closes; past the grace, what is left is
cut and its llama.cpp slot freed."""

from __future__ import annotations

import signal
import threading

import httpx
import pytest

from tests.harness.procs import Process
from tests.harness.wait import wait_until
from tests.integration.test_errors import assert_slots_free
from tests.integration.test_passthrough import ask


@pytest.fixture
def busy(start_llama_server) -> Process:
    """Writes until max_tokens: a stream that lasts as long as a test wants."""
    return start_llama_server("busy", "-np", "2", "--slots")


def _stream(gw: Process, max_tokens: int, out: dict, started: threading.Event) -> None:
    body = {**ask(), "stream": True, "max_tokens": max_tokens}
    events: list[str] = []
    try:
        with httpx.stream("POST", gw.url + "/v1/messages", json=body, timeout=120) as r:
            out["status"] = r.status_code
            for line in r.iter_lines():
                if line.startswith("event: "):
                    events.append(line[7:])
                    started.set()
    except httpx.HTTPError as exc:
        out["error"] = repr(exc)
    out["events"] = events
    started.set()


def test_a_stream_in_flight_finishes_through_sigterm(start_ccgate, busy: Process) -> None:
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": busy.url}}, env={"CCGATE_SHUTDOWN_GRACE": "120"})
    assert httpx.get(gw.url + "/readyz").status_code == 200
    out: dict = {}
    started = threading.Event()
    # ~20 s of tokens here: long enough to ask /readyz and send one more request meanwhile
    streaming = threading.Thread(target=_stream, args=(gw, 20_000, out, started))
    streaming.start()
    assert started.wait(60), "the stream never started"

    gw.proc.send_signal(signal.SIGTERM)
    draining = wait_until(lambda: (r := httpx.get(gw.url + "/readyz")).status_code == 503 and r, "readyz says 503")
    assert draining.json()["status"] == "draining"
    late = httpx.post(
        gw.url + "/v1/messages", json={**ask(), "max_tokens": 8}, timeout=60
    )  # a load balancer's straggler
    assert late.status_code == 200 and late.json()["stop_reason"] == "max_tokens"

    streaming.join(timeout=180)
    assert out.get("status") == 200 and "error" not in out, out
    assert out["events"][-1] == "message_stop"  # the whole answer, not a cut-off one
    assert gw.proc.wait(timeout=60) == 0  # then it left on its own
    with pytest.raises(httpx.ConnectError):
        httpx.get(gw.url + "/healthz", timeout=5)
    log = gw.log.read_text()
    assert "SIGTERM: draining" in log and "drained: closing the listener" in log


def test_past_the_grace_what_is_left_is_cut_and_its_slot_freed(start_ccgate, busy: Process) -> None:
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": busy.url}}, env={"CCGATE_SHUTDOWN_GRACE": "1"})
    out: dict = {}
    started = threading.Event()
    streaming = threading.Thread(target=_stream, args=(gw, 1_000_000, out, started))
    streaming.start()
    assert started.wait(60), "the stream never started"
    wait_until(lambda: any(s["is_processing"] for s in httpx.get(busy.url + "/slots").json()), "the slot is busy")

    gw.proc.send_signal(signal.SIGTERM)
    gw.proc.wait(timeout=60)
    streaming.join(timeout=60)
    assert out["events"][-1] != "message_stop"  # cut, as the grace said
    assert_slots_free(busy, within=15)
    assert "the grace is over, 1 request(s) still running are cut" in gw.log.read_text()


def test_a_gateway_with_nothing_in_flight_stops_at_once(start_ccgate, busy: Process) -> None:
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": busy.url}}, env={"CCGATE_SHUTDOWN_GRACE": "600"})
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(timeout=30) == 0  # far less than the grace: nothing had to finish
    assert "drained: closing the listener" in gw.log.read_text()
