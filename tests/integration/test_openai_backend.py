"""Anthropic SDK → ccgate → translator → a real llama-server's OpenAI /v1/chat/completions."""

from __future__ import annotations

import anthropic
import pytest

from tests.harness.procs import Process
from tests.integration.test_passthrough import ask, tool_turn


@pytest.fixture(params=["openai", "llamacpp"])
def openai_gateway(request: pytest.FixtureRequest, tool_llama: Process, start_ccgate) -> Process:
    """Both ways of reaching an OpenAI-dialect server: kind openai, and kind llamacpp + dialect openai."""
    backend = {"kind": request.param, "url": tool_llama.url + "/v1", "model": "scripted-tool"}
    if request.param == "llamacpp":
        backend["dialect"] = "openai"
    return start_ccgate({"local": backend})


def sdk(gateway: Process) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="test", max_retries=0)


def test_tool_call_non_streaming(openai_gateway: Process) -> None:
    message = sdk(openai_gateway).messages.create(**ask())
    assert message.stop_reason == "tool_use"
    [call] = [b for b in message.content if b.type == "tool_use"]
    assert (call.name, call.input) == ("Read", {"file_path": "a.txt"})
    assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) > 50
    assert message.usage.output_tokens > 0


def test_tool_call_streaming(openai_gateway: Process) -> None:
    with sdk(openai_gateway).messages.stream(**ask()) as stream:
        kinds = [e.type for e in stream]
        message = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    [call] = [b for b in message.content if b.type == "tool_use"]
    assert call.input == {"file_path": "a.txt"}
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_tool_result_round_trip(openai_gateway: Process, stream: bool) -> None:
    """tool_use id → tool_calls id → role tool with the same id: the template sees the result."""
    c = sdk(openai_gateway)
    if stream:
        with c.messages.stream(**ask(tool_turn("call_abc"))) as s:
            message = s.get_final_message()
    else:
        message = c.messages.create(**ask(tool_turn("call_abc")))
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "The file a.txt says hi."
    assert message.stop_reason == "end_turn"


def test_count_tokens_is_estimated(openai_gateway: Process) -> None:
    body = {k: v for k, v in ask().items() if k != "max_tokens"}
    assert sdk(openai_gateway).messages.count_tokens(**body).input_tokens > 20
