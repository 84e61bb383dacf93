"""A request moves to the next backend when the first cannot answer before its first byte."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.harness.procs import Process, free_port
from tests.integration.test_passthrough import ask

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FALLBACK_TEXT = "Hello from the scripted model."


def sdk(gateway: Process) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="test", max_retries=0)


def answer(gateway: Process, stream: bool, body: dict | None = None) -> tuple[httpx.Headers, str]:
    c = sdk(gateway)
    body = dict(body or ask())
    core = {k: body.pop(k) for k in ("model", "max_tokens", "messages")}
    body = {**core, "extra_body": body}  # the SDK refuses fields it does not know as keywords
    if stream:
        with c.messages.with_streaming_response.create(**body, stream=True) as raw:
            text = "".join(
                json.loads(line[6:])["delta"].get("text", "")
                for line in raw.iter_lines()
                if line.startswith("data: ") and "text_delta" in line
            )
            return raw.headers, text
    raw = c.messages.with_raw_response.create(**body)
    return raw.headers, "".join(b.text for b in raw.parse().content if b.type == "text")


def assert_fell_back(gw: Process, stream: bool, reason: str, body: dict | None = None, to: str = "fallback") -> None:
    headers, text = answer(gw, stream, body)
    assert headers["x-ccgate-backend"] == to
    assert reason in headers["x-ccgate-fallback-reason"]
    assert text == FALLBACK_TEXT


@pytest.mark.parametrize("stream", [False, True])
def test_local_down_goes_to_fallback(start_ccgate, text_llama: Process, stream: bool) -> None:
    gw = start_ccgate(
        {
            "local": {"kind": "llamacpp", "url": f"http://127.0.0.1:{free_port()}"},
            "fallback": {"kind": "anthropic", "url": text_llama.url},
        }
    )
    assert_fell_back(gw, stream, "local: ")


def test_local_dies_mid_session(start_ccgate, start_llama_server, text_llama: Process) -> None:
    local = start_llama_server("tool", "-np", "1")
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": local.url}, "fallback": {"kind": "anthropic", "url": text_llama.url}}
    )
    headers, _ = answer(gw, stream=True)
    assert headers["x-ccgate-backend"] == "local"
    local.stop()
    headers, text = answer(gw, stream=True)
    assert headers["x-ccgate-backend"] == "fallback"
    assert "connection refused" in headers["x-ccgate-fallback-reason"]
    assert text == FALLBACK_TEXT


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("window", "reason"),
    [
        (None, "small: context 20k > window 512"),  # n_ctx read from llama-server's /props: skipped
        (10**6, "exceeds the available context size"),  # a wrong window: llama-server's 400 moves it
    ],
)
def test_context_overflow_moves_to_a_bigger_window(
    start_ccgate, start_llama_server, text_llama: Process, stream: bool, window: int | None, reason: str
) -> None:
    small = start_llama_server("tool", "-c", "512", "-np", "1")
    config = {"kind": "llamacpp", "url": small.url}
    if window:
        config["context_window"] = window
    gw = start_ccgate({"small": config, "big": {"kind": "anthropic", "url": text_llama.url}})
    body = json.loads((FIXTURES / "claude-code-request-turn1.json").read_text())["body"]
    body.pop("stream")
    body["max_tokens"] = 1024  # the SDK refuses 64000 without streaming
    assert_fell_back(gw, stream, reason, body, to="big")


def test_upstream_529_moves_on(start_ccgate, text_llama: Process) -> None:
    """A real server answering 529 (another ccgate whose backends are all down) is overloaded: next."""
    overloaded = start_ccgate({"dead": {"kind": "llamacpp", "url": f"http://127.0.0.1:{free_port()}"}})
    gw = start_ccgate(
        {"first": {"kind": "anthropic", "url": overloaded.url}, "second": {"kind": "anthropic", "url": text_llama.url}}
    )
    headers, text = answer(gw, stream=True)
    assert headers["x-ccgate-backend"] == "second"
    assert "HTTP 529" in headers["x-ccgate-fallback-reason"]
    assert text == FALLBACK_TEXT


def test_every_backend_down_is_529_overloaded(start_ccgate) -> None:
    gw = start_ccgate(
        {
            "local": {"kind": "llamacpp", "url": f"http://127.0.0.1:{free_port()}"},
            "fallback": {"kind": "anthropic", "url": f"http://127.0.0.1:{free_port()}"},
        }
    )
    with pytest.raises(anthropic.APIStatusError) as caught:  # with the SDK's retries, as a user has them
        anthropic.Anthropic(base_url=gw.url, api_key="test").messages.create(**ask())
    err = caught.value
    assert err.status_code == 529
    assert err.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert err.response.headers["retry-after"] == "1"
    assert "local" in err.message and "fallback" in err.message
    ready = httpx.get(gw.url + "/readyz")
    assert ready.status_code == 503
    assert ready.json()["backends"]["fallback"]["detail"].endswith("connection refused")


PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAAAAgABVKJPXQAAAABJRU5ErkJggg=="


@pytest.mark.parametrize("stream", [False, True])
def test_image_without_vision_moves_on(gateway: Process, stream: bool) -> None:
    """llama-server without an mmproj answers 500 "image input is not supported": not final.

    The test's fallback is a llama-server without vision too, so both fail, in order.
    """
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    body = {**ask(), "messages": [{"role": "user", "content": [image, {"type": "text", "text": "what is this?"}]}]}
    with pytest.raises(anthropic.InternalServerError) as caught:
        answer(gateway, stream, body)
    message = caught.value.body["error"]["message"]  # type: ignore[index]
    assert message.startswith("every backend failed (local: HTTP 500: image input is not supported")
    assert "; fallback: HTTP 500" in message
    assert caught.value.response.headers["x-ccgate-route"] == "default"


@pytest.mark.parametrize("stream", [False, True])
def test_broken_tool_call_moves_to_fallback_before_any_byte(
    start_ccgate, start_llama_server, text_llama: Process, stream: bool
) -> None:
    """HTTP 500 (non-streaming) or HTTP 200 whose first event is an error (streaming): both move."""
    broken = start_llama_server("broken", "-np", "1")
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": broken.url}, "fallback": {"kind": "anthropic", "url": text_llama.url}}
    )
    assert_fell_back(gw, stream, "Unexpected empty grammar stack")


def test_fallback_on_limits_what_moves(start_ccgate, start_llama_server, text_llama: Process) -> None:
    """`fallback: {on: [connect]}`: a backend's 500 is then the client's answer (as a 502, the
    upstream having failed), not a reason to move."""
    broken = start_llama_server("broken", "-np", "1")
    backends = {
        "local": {"kind": "llamacpp", "url": broken.url},
        "fallback": {"kind": "anthropic", "url": text_llama.url},
    }
    gw = start_ccgate(backends, extra={"fallback": {"on": ["connect"]}})
    r = httpx.post(gw.url + "/v1/messages", json=ask(), timeout=30)
    assert r.status_code == 502
    assert r.json()["error"]["type"] == "api_error"
    message = r.json()["error"]["message"]
    assert message.startswith("local: HTTP 500: ") and "Unexpected empty grammar stack" in message


def test_context_size_learned_from_the_overflow_error(start_ccgate, start_llama_server, text_llama: Process) -> None:
    """An OpenAI-dialect server has no /props: its n_ctx is learned from the first overflow."""
    small = start_llama_server("tool", "-c", "512", "-np", "1")
    gw = start_ccgate(
        {"small": {"kind": "openai", "url": small.url + "/v1"}, "big": {"kind": "anthropic", "url": text_llama.url}}
    )
    body = json.loads((FIXTURES / "claude-code-request-turn1.json").read_text())["body"]
    body.pop("stream")
    body["max_tokens"] = 1024
    assert_fell_back(gw, False, "exceeds the available context size", body, to="big")
    assert_fell_back(gw, False, "small: context 20k > window 512", body, to="big")  # not even tried
