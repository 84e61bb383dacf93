"""Hostile sizes against the running gateway: a 10 MB string, 5,000 tools, one huge tool schema,
JSON nested 10,000 levels deep. Each gets an answer (or a clean 4xx) and the gateway keeps
answering others meanwhile; their worst latency during each attack is printed.

The backend is the hostile upstream as a `llamacpp` backend: it answers at once whatever it is
sent, so what is measured is ccgate's own handling (parsing, hashing, the tool guard's schemas)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.health_watch import HealthWatch
from tests.harness.procs import Process, start_hostile

HOSTILE_TEXT = "Hello from the hostile server."


@pytest.fixture(scope="module")
def upstream(logdir: Path) -> Iterator[Process]:
    proc = start_hostile(logdir)
    yield proc
    proc.stop()


@pytest.fixture
def gateway(start_ccgate, upstream: Process) -> Process:
    """The window is set huge, so every attack reaches the tool guard and the upstream."""
    return start_ccgate({"local": {"kind": "llamacpp", "url": upstream.url, "context_window": 100_000_000}})


def tools(n: int) -> list[dict]:
    schema = {
        "type": "object",
        "properties": {"path": {"type": "string", "pattern": "^[a-z/]+$"}},
        "required": ["path"],
    }
    return [{"name": f"tool_{i}", "description": "d" * 50, "input_schema": schema} for i in range(n)]


def nested_schema(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for i in range(depth):
        schema = {"type": "object", "properties": {f"p{i}": schema, f"q{i}": {"type": "integer"}}}
    return schema


ATTACKS = {
    "10 MB string": {"messages": [{"role": "user", "content": "x" * 10_000_000}]},
    "5,000 tools": {"messages": [{"role": "user", "content": "hi"}], "tools": tools(5000)},
    "a 4 MB tool schema": {
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": "deep", "input_schema": {**nested_schema(60), "description": "z" * 4_000_000}}],
    },
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_huge_request_is_answered_and_others_are_served_meanwhile(gateway: Process, attack: str) -> None:
    body = json.dumps({"model": "hostile", "max_tokens": 16, **ATTACKS[attack]}).encode()
    with HealthWatch(gateway.url) as watch:
        r = httpx.post(
            gateway.url + "/v1/messages", content=body, headers={"content-type": "application/json"}, timeout=120
        )
    assert r.status_code == 200, r.text[:300]
    assert r.json()["content"][0]["text"] == HOSTILE_TEXT
    assert watch.failures == 0
    print(f"{attack} ({len(body) / 1e6:.1f} MB): {r.status_code}; /healthz worst {watch.worst * 1000:.0f} ms")


def test_json_nested_ten_thousand_deep_is_a_clean_400_in_every_dialect(gateway: Process) -> None:
    deep = b'{"model": "m", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    for path in ("/v1/messages", "/v1/chat/completions", "/v1/responses"):
        r = httpx.post(gateway.url + path, content=deep, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == 400, (path, r.text[:300])
        assert "nests JSON too deeply" in r.text or "messages" in r.text
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_a_prompt_no_backend_can_hold_is_a_400_not_a_529(start_ccgate, upstream: Process) -> None:
    """A 529 would make the client retry for ever; this is Anthropic's 400 for a prompt over the
    window, whose words Claude Code answers by offering to compact the conversation."""
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": upstream.url}})  # its /props: 65,536 tokens
    text = "x" * 1_000_000
    anthropic = httpx.post(
        gw.url + "/v1/messages",
        json={"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": text}]},
        timeout=60,
    )
    assert anthropic.status_code == 400 and anthropic.json()["error"]["type"] == "invalid_request_error"
    assert anthropic.json()["error"]["message"].startswith("prompt is too long")
    chat = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": text}]},
        timeout=60,
    )
    assert chat.status_code == 400 and chat.json()["error"]["message"].startswith("prompt is too long")
