"""The harness itself: scripted models behave as later issues rely on, Redis is reachable."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from tests.harness.procs import Process
from tests.integration.test_passthrough import ask

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


async def test_redis_fixture_answers(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_claude_code_prompt_tokenizes_near_a_real_tokenizer(tool_llama: Process) -> None:
    body = json.loads((FIXTURES / "claude-code-request-turn1.json").read_text())["body"]
    body = {k: v for k, v in body.items() if k in ("model", "system", "tools", "messages")}
    count = httpx.post(tool_llama.url + "/v1/messages/count_tokens", json=body, timeout=60).json()["input_tokens"]
    assert 15_000 < count < 30_000  # bytes alone would be ~99k; a real tokenizer gives ~20-26k


def test_chatml_template_returns_the_call_as_text(start_llama_server) -> None:
    """The "template ignores tools" failure: the call comes back as plain text, not tool_use."""
    server = start_llama_server("tool", "--chat-template", "chatml")
    message = httpx.post(server.url + "/v1/messages", json=ask(), timeout=60).json()
    assert [b["type"] for b in message["content"]] == ["text"]
    assert message["content"][0]["text"].startswith('<tool_call>\n{"name": "Read"')


def test_text_and_loop_models(start_llama_server, text_llama: Process) -> None:
    message = httpx.post(text_llama.url + "/v1/messages", json=ask(), timeout=60).json()
    assert message["content"] == [{"type": "text", "text": "Hello from the scripted model."}]
    looping = start_llama_server("loop", "-np", "1")
    message = httpx.post(looping.url + "/v1/messages", json={**ask(), "max_tokens": 50}, timeout=60).json()
    assert message["stop_reason"] == "max_tokens"
    assert message["content"][0]["text"].count("loop") >= 49


def test_broken_model_fails_the_way_llama_server_does(start_llama_server) -> None:
    broken = start_llama_server("broken", "-np", "1")
    r = httpx.post(broken.url + "/v1/messages", json=ask(), timeout=60)
    assert r.status_code == 500 and "Unexpected empty grammar stack" in r.text
    with httpx.stream("POST", broken.url + "/v1/messages", json={**ask(), "stream": True}, timeout=60) as s:
        assert s.status_code == 200
        assert s.read().startswith(b"event: error\n")
