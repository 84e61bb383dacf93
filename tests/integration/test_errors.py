"""Every failure class reaches the client in Anthropic's error shape, and ccgate keeps serving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.harness.procs import Process
from tests.harness.wait import wait_until
from tests.integration.test_passthrough import ask

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"}
    return body["error"]


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"model": "x", "max_tokens": 10, "messages": [', "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"", "empty"),
        (b'{"model": "x", "max_tokens": "ten", "messages": [{"role": "user", "content": "hi"}]}', "max_tokens"),
        (b'{"model": "x", "max_tokens": 10}', "messages"),
        (b'{"model": "x", "max_tokens": 10, "messages": [{"role": "robot", "content": "hi"}]}', "messages[0].role"),
        (
            b'{"model": "x", "max_tokens": 10, "messages": [{"role": "user", "content": [{"text": "a"}]}]}',
            "content[0].type",
        ),
        (b'{"model": 7, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ],
)
def test_bad_request_names_the_field(gateway: Process, content: bytes, field: str) -> None:
    r = httpx.post(gateway.url + "/v1/messages", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    err = error_of(r)
    assert err["type"] == "invalid_request_error"
    assert field in err["message"]
    assert "Traceback" not in r.text


def test_unknown_route_and_method(gateway: Process) -> None:
    r = httpx.get(gateway.url + "/v1/nothing")
    assert (r.status_code, error_of(r)["type"]) == (404, "not_found_error")
    r = httpx.get(gateway.url + "/v1/messages")
    assert r.status_code == 405
    assert error_of(r)["type"] == "invalid_request_error"


def test_oversized_body_is_413_and_gateway_keeps_serving(start_ccgate, tool_llama: Process) -> None:
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": tool_llama.url}}, env={"CCGATE_MAX_BODY_BYTES": "4096"})
    big = {**ask(), "messages": [{"role": "user", "content": "x" * 10_000}]}
    r = httpx.post(gw.url + "/v1/messages", json=big)
    assert r.status_code == 413
    err = error_of(r)
    assert err["type"] == "request_too_large"
    assert "4096" in err["message"]
    ok = httpx.post(gw.url + "/v1/messages", json=ask())
    assert ok.status_code == 200


def test_upstream_auth_failure_is_401_and_never_shows_the_key(start_ccgate, start_llama_server) -> None:
    secured = start_llama_server("text", "--api-key", "sk-upstream-right")
    wrong = start_ccgate({"local": {"kind": "anthropic", "url": secured.url, "api_key": "sk-upstream-WRONG-secret"}})
    r = httpx.post(wrong.url + "/v1/messages", json=ask(), headers={"x-api-key": "client-token"})
    assert r.status_code == 401
    assert error_of(r)["type"] == "authentication_error"
    assert "sk-upstream" not in r.text and "sk-upstream" not in str(r.headers)

    right = start_ccgate({"local": {"kind": "anthropic", "url": secured.url, "api_key": "sk-upstream-right"}})
    assert httpx.post(right.url + "/v1/messages", json=ask()).status_code == 200


def test_client_token_passthrough(start_ccgate, start_llama_server) -> None:
    """`auth: passthrough` (and auto without api_key): a teammate's own token reaches the upstream."""
    secured = start_llama_server("text", "--api-key", "sk-teammate")
    gw = start_ccgate({"upstream": {"kind": "anthropic", "url": secured.url}})
    client = anthropic.Anthropic(base_url=gw.url, api_key="sk-teammate", max_retries=0)
    assert client.messages.create(**ask()).content[0].text == "Hello from the scripted model."
    bearer = anthropic.Anthropic(base_url=gw.url, auth_token="sk-teammate", max_retries=0)
    assert bearer.messages.create(**ask()).stop_reason == "end_turn"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gw.url, api_key="sk-nope", max_retries=0).messages.create(**ask())


def test_llamacpp_backend_never_gets_the_clients_token(start_ccgate, start_llama_server) -> None:
    """A local llama-server must not see a teammate's Anthropic key: kind llamacpp defaults to auth: key."""
    secured = start_llama_server("text", "--api-key", "sk-teammate")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": secured.url}})
    r = httpx.post(gw.url + "/v1/messages", json=ask(), headers={"x-api-key": "sk-teammate"})
    assert r.status_code == 401


@pytest.mark.parametrize("stream", [False, True])
def test_first_byte_timeout_is_504(start_ccgate, start_llama_server, stream: bool) -> None:
    """A cold 20k-token Claude Code prompt takes ~1 s to process here: longer than first_byte."""
    cold = start_llama_server("tool", "-np", "1")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": cold.url, "timeouts": {"first_byte": 0.2}}})
    body = {**json.loads((FIXTURES / "claude-code-request-turn1.json").read_text())["body"], "stream": stream}
    r = httpx.post(gw.url + "/v1/messages", json=body, timeout=30)
    assert r.status_code == 504
    err = error_of(r)
    assert err["type"] == "timeout_error"
    assert "local" in err["message"] and "within 0.2s" in err["message"]


def test_total_timeout_is_504_and_frees_the_slot(start_ccgate, start_llama_server) -> None:
    looping = start_llama_server("busy", "-np", "1")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": looping.url, "timeouts": {"total": 1.5}}})
    r = httpx.post(gw.url + "/v1/messages", json={**ask(), "max_tokens": 250_000}, timeout=30)
    assert r.status_code == 504
    assert "did not finish within 1.5s" in error_of(r)["message"]
    assert_slots_free(looping)


def test_backend_dying_mid_stream_ends_with_error_event(start_ccgate, start_llama_server) -> None:
    looping = start_llama_server("busy", "-np", "1")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": looping.url}})
    lines: list[str] = []
    with httpx.stream(
        "POST", gw.url + "/v1/messages", json={**ask(), "max_tokens": 200_000, "stream": True}, timeout=30
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
            if len(lines) == 20:
                looping.kill()
    assert "event: error" in lines
    data = lines[lines.index("event: error") + 1]
    assert '"type":"error"' in data and "loop" not in data.split("message")[0]
    assert httpx.get(gw.url + "/healthz").status_code == 200


def assert_slots_free(server: Process, within: float = 60.0) -> None:
    """Poll llama-server's /slots until no slot is processing.

    Polled about once a second on purpose: llama-server checks whether a non-streaming client is
    still connected only when its result queue has been idle for a second, and every /slots call
    wakes that queue, so polling faster would keep the slot busy by itself.
    """
    deadline = time.monotonic() + within
    slots: list[dict] = []
    while time.monotonic() < deadline:
        time.sleep(1.1)
        slots = httpx.get(server.url + "/slots").json()
        if not any(s["is_processing"] for s in slots):
            return
    raise AssertionError(f"a llama.cpp slot is still processing {within}s after the client left: {slots}")


def test_backend_dying_before_it_answers_is_502(start_ccgate, start_llama_server) -> None:
    """Non-streaming: llama-server is killed while generating, before any byte came back."""
    import threading

    looping = start_llama_server("busy", "-np", "1")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": looping.url}})
    answers: list[httpx.Response] = []
    asking = threading.Thread(
        target=lambda: answers.append(
            httpx.post(gw.url + "/v1/messages", json={**ask(), "max_tokens": 250_000}, timeout=120)
        )
    )
    asking.start()
    wait_until(
        lambda: any(s["is_processing"] for s in httpx.get(looping.url + "/slots").json()), "llama-server generates"
    )
    looping.kill()
    asking.join()
    [r] = answers
    assert r.status_code == 502
    err = error_of(r)
    assert err["type"] == "api_error"
    # killed mid-generation: before or after llama-server's first chunk, the client saw nothing yet
    assert "local: " in err["message"] and "broke" in err["message"], err
