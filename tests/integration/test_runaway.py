"""The runaway guard against real llama-servers running scripted models: `loop` (one word to the
end of max_tokens), `leaky` (an answer, then another family's end-of-turn markup and more),
`busy` (a long cycle of distinct words: a long answer that is not a runaway)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.harness.procs import Process, free_port
from tests.integration.test_errors import assert_slots_free
from tests.integration.test_metrics import scrape, value

FALLBACK_TEXT = "Hello from the scripted model."


def asking(stream: bool, max_tokens: int = 20_000) -> dict:
    return {
        "model": "claude-opus-4-8",
        "max_tokens": max_tokens,
        "stream": stream,
        "messages": [{"role": "user", "content": "tell me something"}],
    }


def streamed(gw: Process, body: dict) -> list[dict]:
    with httpx.stream("POST", gw.url + "/v1/messages", json=body, timeout=120) as r:
        assert r.status_code == 200
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]


def text_of(events: list[dict]) -> str:
    return "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
def test_a_looping_answer_is_stopped_and_its_slot_freed(start_ccgate, start_llama_server, dialect: str) -> None:
    looping = start_llama_server("loop", "-np", "1", "--slots")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": looping.url, "dialect": dialect}})
    events = streamed(gw, asking(stream=True))
    text = text_of(events)
    assert text.count(" loop") < 200  # stopped after ~600 characters, not 20,000 tokens
    assert "[ccgate stopped this answer: the model repeated itself" in text
    assert [e["type"] for e in events[-2:]] == ["message_delta", "message_stop"]
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-2]["usage"]["output_tokens"] >= text.count(" loop")  # what it wrote (~1 token a loop)
    assert_slots_free(looping)
    assert value(scrape(gw), "ccgate_runaway_total", backend="local", kind="repetition") == 1


def test_a_loop_before_anything_went_out_moves_to_the_next_target(
    start_ccgate, start_llama_server, text_llama: Process
) -> None:
    looping = start_llama_server("loop", "-np", "1", "--slots")
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": looping.url}, "fallback": {"kind": "anthropic", "url": text_llama.url}}
    )
    r = httpx.post(gw.url + "/v1/messages", json=asking(stream=False), timeout=120)
    assert r.status_code == 200 and r.headers["x-ccgate-backend"] == "fallback"
    assert "local: stopped a runaway answer" in r.headers["x-ccgate-fallback-reason"]
    assert r.json()["content"][0]["text"] == FALLBACK_TEXT
    assert_slots_free(looping)
    samples = scrape(gw)
    assert value(samples, "ccgate_fallbacks_total", from_backend="local", to_backend="fallback", reason="runaway") == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_leaked_end_of_turn_markup_ends_the_answer_there(start_ccgate, start_llama_server, stream: bool) -> None:
    leaky = start_llama_server("leaky", "-np", "1")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": leaky.url}})
    if stream:
        text = text_of(streamed(gw, asking(stream=True)))
    else:
        message = httpx.post(gw.url + "/v1/messages", json=asking(stream=False), timeout=120).json()
        text = "".join(b.get("text", "") for b in message["content"])
        assert message["stop_reason"] == "end_turn"
    assert text == "The answer is 42."
    assert value(scrape(gw), "ccgate_runaway_total", backend="local", kind="markup") == 1


def test_a_long_answer_that_does_not_repeat_goes_on(start_ccgate, start_llama_server) -> None:
    busy = start_llama_server("busy", "-np", "1")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": busy.url}})
    events = streamed(gw, asking(stream=True, max_tokens=600))
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert "ccgate stopped" not in text_of(events) and len(text_of(events)) > 3000


def test_the_guard_can_be_turned_off_and_the_output_capped(start_ccgate, start_llama_server) -> None:
    looping = start_llama_server("loop", "-np", "1")
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": looping.url, "runaway_guard": "off", "max_output_tokens": 300}}
    )
    events = streamed(gw, asking(stream=True, max_tokens=20_000))
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2]["usage"]["output_tokens"] == 300  # the client asked 20,000: the backend's cap held
    assert text_of(events).count(" loop") == 300


def test_a_loop_is_answered_as_stopped_when_the_next_target_fails_too(start_ccgate, start_llama_server) -> None:
    looping = start_llama_server("loop", "-np", "1", "--slots")
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": looping.url}, "fallback": {"kind": "anthropic", "url": dead}}
    )
    r = httpx.post(gw.url + "/v1/messages", json=asking(stream=False), timeout=120)
    assert r.status_code == 200 and r.headers["x-ccgate-backend"] == "local", r.text
    text = "".join(b.get("text", "") for b in r.json()["content"])
    assert "[ccgate stopped this answer: the model repeated itself" in text
    assert r.json()["usage"]["output_tokens"] >= text.count(" loop")
