"""The tool-call guard against real llama-servers running the scripted models.

`--chat-template chatml` makes llama-server ignore the tools (its template cannot render them
and no tool-call parser runs), so the `tool` model's call comes back as plain text: the failure
local models are known for.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from tests.harness.procs import Process
from tests.integration.test_fallback import assert_fell_back
from tests.integration.test_metrics import scrape, value
from tests.integration.test_passthrough import READ_TOOL, ask


def sdk(gateway: Process) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="test", max_retries=0)


def final_message(gateway: Process, stream: bool, **body: object) -> anthropic.types.Message:
    request = {**ask(), **body}
    if stream:
        with sdk(gateway).messages.stream(**request) as events:
            return events.get_final_message()
    return sdk(gateway).messages.create(**request)


@pytest.fixture
def chatml_tool(start_llama_server) -> Process:
    return start_llama_server("tool", "-np", "1", "--chat-template", "chatml")


def test_calls_written_as_text_reach_the_client_as_tool_use(start_ccgate, chatml_tool: Process) -> None:
    gw = start_ccgate(
        {
            "anthropic_wire": {"kind": "llamacpp", "url": chatml_tool.url},
            "openai_wire": {"kind": "llamacpp", "url": chatml_tool.url, "dialect": "openai"},
        },
        extra={
            "rules": [
                {"name": "openai", "when": {"model": "*openai*"}, "to": ["openai_wire"]},
                {"name": "default", "to": ["anthropic_wire"]},
            ]
        },
    )
    for model in ("claude-opus-4-8", "claude-openai-wire"):
        for stream in (False, True):
            message = final_message(gw, stream, model=model)
            assert [b.type for b in message.content] == ["tool_use"], (model, stream, message.content)
            call = message.content[0]
            assert call.name == "Read" and call.input == {"file_path": "a.txt"}
            assert call.id.startswith("toolu_")
            assert message.stop_reason == "tool_use"
    samples = scrape(gw)
    assert value(samples, "ccgate_tool_calls_total", backend="anthropic_wire", outcome="converted") == 2
    assert value(samples, "ccgate_tool_calls_total", backend="openai_wire", outcome="converted") == 2


def test_guard_off_passes_the_text_through(start_ccgate, chatml_tool: Process) -> None:
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": chatml_tool.url, "tool_guard": "off"}})
    message = final_message(gw, stream=True)
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text.startswith("<tool_call>")


def test_structured_calls_pass_and_are_counted(start_ccgate, tool_llama: Process) -> None:
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": tool_llama.url}})
    for stream in (False, True):
        message = final_message(gw, stream)
        assert message.content[0].type == "tool_use" and message.content[0].input == {"file_path": "a.txt"}
    assert value(scrape(gw), "ccgate_tool_calls_total", backend="local", outcome="passed") == 2


STRICT_READ = {
    **READ_TOOL,
    "input_schema": {
        **READ_TOOL["input_schema"],
        "properties": {"file_path": {"type": "string"}, "mode": {"type": "string"}},
        "required": ["file_path", "mode"],
    },
}
WRITE_TOOL = {**READ_TOOL, "name": "Write"}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("tools", "reason"),
    [([STRICT_READ], '"mode" is a required property'), ([WRITE_TOOL], "not among the offered tools")],
    ids=["schema", "unknown-tool"],
)
def test_a_rejected_call_moves_to_the_fallback_before_any_byte(
    start_ccgate, chatml_tool: Process, text_llama: Process, stream: bool, tools: list, reason: str
) -> None:
    gw = start_ccgate(
        {
            "local": {"kind": "llamacpp", "url": chatml_tool.url},
            "fallback": {"kind": "anthropic", "url": text_llama.url},
        }
    )
    assert_fell_back(gw, stream, reason, body={**ask(), "tools": tools})
    samples = scrape(gw)
    assert value(samples, "ccgate_tool_calls_total", backend="local", outcome="failed") == 1
    assert (
        value(samples, "ccgate_fallbacks_total", from_backend="local", to_backend="fallback", reason="tool_call") == 1
    )


def test_a_rejected_call_with_nowhere_to_go_is_an_anthropic_error(start_ccgate, chatml_tool: Process) -> None:
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": chatml_tool.url}})
    r = httpx.post(gw.url + "/v1/messages", json={**ask(), "tools": [STRICT_READ]}, timeout=30)
    assert r.status_code == 502
    error = r.json()
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert (
        "unusable tool call" in error["error"]["message"]
        and '"mode" is a required property' in error["error"]["message"]
    )
    assert httpx.get(gw.url + "/readyz").status_code == 200  # the breaker stays closed: it is the model, not the server


def test_a_call_rejected_after_prose_went_out_ends_the_stream_with_an_error(
    start_ccgate, start_llama_server, text_llama: Process
) -> None:
    """The `chatty` model writes a sentence, then a call with a misnamed argument. Streaming, the
    sentence has reached the client before the call can be judged: no fallback is possible any
    more, so the stream ends with an Anthropic error event. Not streaming, nothing was sent yet,
    so the same answer moves to the fallback.

    Unpinned (`pick: least_busy`): llama-server's /v1/messages sends `message_start` before the
    answer, so the client has its first byte before the sentence. Pinned to a slot, the request
    goes to Chat Completions, whose first chunk may say nothing (ccgate then waits for one that
    does); this model writes sentence and call in one token, so the whole answer may be in hand
    before the first byte, and then moves to the fallback: better for the client, but not the
    case this test is about."""
    chatty = start_llama_server("chatty", "-np", "1", "--chat-template", "chatml")
    backends = {
        "local": {"kind": "llamacpp", "url": chatty.url},
        "fallback": {"kind": "anthropic", "url": text_llama.url},
    }
    gw = start_ccgate(
        backends, extra={"rules": [{"name": "default", "to": ["local", "fallback"], "pick": "least_busy"}]}
    )
    with httpx.stream("POST", gw.url + "/v1/messages", json={**ask(), "stream": True}, timeout=30) as r:
        assert r.status_code == 200 and r.headers["x-ccgate-backend"] == "local"
        events = [line for line in r.iter_lines() if line.startswith(("event:", "data:"))]
    text = "".join(json.loads(e[6:])["delta"]["text"] for e in events if e.startswith("data:") and "text_delta" in e)
    assert text == "Let me check that file.\n"
    assert events[-2] == "event: error"
    error = json.loads(events[-1][6:])["error"]
    assert "unusable tool call" in error["message"] and "file_path" in error["message"]
    assert not any("tool_use" in e for e in events)

    assert_fell_back(gw, stream=False, reason="unusable tool call")
    samples = scrape(gw)
    assert value(samples, "ccgate_tool_calls_total", backend="local", outcome="failed") == 2
