"""A client that hangs up frees its llama.cpp slot at once (checked on the server's own /slots)."""

from __future__ import annotations

import httpx
import pytest

from tests.harness.procs import Process
from tests.integration.test_errors import assert_slots_free
from tests.integration.test_passthrough import ask

LONG = {**ask(), "max_tokens": 250_000}  # the busy model would keep its slot busy for a long while


@pytest.fixture
def looping(start_llama_server) -> Process:
    return start_llama_server("busy", "-np", "1", "--slots")


def busy(server: Process) -> bool:
    return any(s["is_processing"] for s in httpx.get(server.url + "/slots").json())


@pytest.mark.parametrize("kind", ["llamacpp", "openai"])
def test_streaming_client_hangs_up(start_ccgate, looping: Process, kind: str) -> None:
    gw = start_ccgate({"local": {"kind": kind, "url": looping.url}})
    with httpx.stream("POST", gw.url + "/v1/messages", json={**LONG, "stream": True}, timeout=30) as r:
        assert r.status_code == 200
        lines = r.iter_lines()  # kept: breaking out of a for loop would close the connection here
        for _ in range(30):
            next(lines)
        assert busy(looping)
    assert_slots_free(looping, within=15)  # far less than the ~30 s the loop would run


@pytest.mark.parametrize(
    "backend",
    [{"kind": "llamacpp"}, {"kind": "llamacpp", "dialect": "openai"}, {"kind": "openai"}],
    ids=["llamacpp", "llamacpp-openai-dialect", "openai"],
)
def test_waiting_client_hangs_up(start_ccgate, looping: Process, backend: dict) -> None:
    """Non-streaming: the handler is still waiting for the backend when the client leaves."""
    gw = start_ccgate({"local": {**backend, "url": looping.url}})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.url + "/v1/messages", json=LONG, timeout=httpx.Timeout(30, read=1.5))
    assert_slots_free(looping, within=15)  # far less than the ~30 s the loop would run
    # and the gateway still answers the next request on the freed slot
    assert httpx.post(gw.url + "/v1/messages", json={**ask(), "max_tokens": 5}, timeout=30).status_code == 200
