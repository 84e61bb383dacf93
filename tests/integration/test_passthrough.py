"""Anthropic SDK → ccgate → a real llama-server's native /v1/messages (the scripted `tool` model)."""

from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.harness.procs import Process

READ_TOOL = {
    "name": "Read",
    "description": "Read a file from the local filesystem.",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"file_path": {"type": "string"}},
        "required": ["file_path"],
        "additionalProperties": False,
    },
}
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"  # captured from Claude Code 2.1.197


def client(gateway: Process) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="test", max_retries=0)


def ask(messages: list[dict] | None = None) -> dict:
    return {
        "model": "claude-opus-4-8",
        "max_tokens": 256,
        "tools": [READ_TOOL],
        "messages": messages or [{"role": "user", "content": "read a.txt"}],
    }


def tool_turn(tool_use_id: str) -> list[dict]:
    return [
        {"role": "user", "content": "read a.txt"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": tool_use_id, "name": "Read", "input": {"file_path": "a.txt"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use_id, "content": "hi"}]},
    ]


def test_non_streaming_tool_call(gateway: Process) -> None:
    raw = client(gateway).messages.with_raw_response.create(**ask())
    message = raw.parse()
    assert raw.headers["x-ccgate-backend"] == "local"
    assert raw.headers["x-ccgate-route"] == "default"
    assert message.stop_reason == "tool_use"
    [call] = [b for b in message.content if b.type == "tool_use"]
    assert (call.name, call.input) == ("Read", {"file_path": "a.txt"})


def test_streaming_tool_call(gateway: Process) -> None:
    with client(gateway).messages.stream(**ask()) as stream:
        events = [event.type for event in stream]
        message = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "input_json" in events
    [call] = [b for b in message.content if b.type == "tool_use"]
    assert call.input == {"file_path": "a.txt"}
    assert message.stop_reason == "tool_use"


@pytest.mark.parametrize("stream", [False, True])
def test_tool_result_turn_gets_final_text(gateway: Process, stream: bool) -> None:
    c = client(gateway)
    if stream:
        with c.messages.stream(**ask(tool_turn("toolu_01"))) as s:
            message = s.get_final_message()
    else:
        message = c.messages.create(**ask(tool_turn("toolu_01")))
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text == "The file a.txt says hi."


def test_count_tokens_comes_from_the_backend(gateway: Process, tool_llama: Process) -> None:
    body = {k: v for k, v in ask().items() if k != "max_tokens"}
    ours = client(gateway).messages.count_tokens(**body).input_tokens
    direct = httpx.post(tool_llama.url + "/v1/messages/count_tokens", json=body).json()["input_tokens"]
    assert ours == direct > 50


def test_claude_code_capture_passes_through_unchanged(gateway: Process) -> None:
    """The 78 KB first request Claude Code sends (`?beta=true`, 24 tools, thinking, betas)."""
    capture = json.loads((FIXTURES / "claude-code-request-turn1.json").read_text())
    headers = {
        k: v for k, v in capture["headers"].items() if k.lower() not in ("host", "content-length", "accept-encoding")
    }
    events: list[str] = []
    with httpx.stream(
        "POST", gateway.url + "/v1/messages?beta=true", json=capture["body"], headers=headers, timeout=120
    ) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            if line.startswith("data: ") and '"tool_use"' in line and "content_block_start" in line:
                assert '"name":"Read"' in line
    assert events[0] == "message_start"
    assert events[-1] == "message_stop"
    assert "content_block_start" in events


def test_claude_code_tool_result_capture(gateway: Process) -> None:
    capture = json.loads((FIXTURES / "claude-code-request-turn2-tool-result.json").read_text())
    body = {**capture["body"], "stream": False}
    r = httpx.post(
        gateway.url + "/v1/messages?beta=true", json=body, headers={"anthropic-version": "2023-06-01"}, timeout=120
    )
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == "The file a.txt says hi."


def test_models_lists_what_the_local_server_serves(gateway: Process, tool_llama: Process) -> None:
    served = [m["id"] for m in httpx.get(tool_llama.url + "/v1/models").json()["data"]]
    listed = client(gateway).models.list()
    assert served and [m.id for m in listed.data] == served


def test_probes(gateway: Process) -> None:
    assert httpx.head(gateway.url + "/").status_code == 200
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["backends"]["local"]["healthy"] is True
    assert httpx.get(gateway.url + "/v1/models").json()["has_more"] is False
