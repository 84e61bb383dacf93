"""The `openai` SDK → ccgate's Chat Completions and Responses endpoints → real llama-servers, in
both backend dialects (llama-server's /v1/messages and its /v1/chat/completions), and through the
tool-call guard."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.harness.procs import Process

READ = {
    "name": "Read",
    "description": "Read a file from the local filesystem.",
    "parameters": {
        "type": "object",
        "properties": {"file_path": {"type": "string"}},
        "required": ["file_path"],
        "additionalProperties": False,
    },
}
CHAT_TOOLS = [{"type": "function", "function": READ}]
RESPONSES_TOOLS = [{"type": "function", "strict": True, **READ}, {"type": "web_search"}]
WIRES = ("anthropic", "openai")  # the llamacpp backend's own dialect towards llama-server


def sdk(gateway: Process) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="test", max_retries=0)


@pytest.fixture
def both_wires(start_ccgate, tool_llama: Process) -> Process:
    """One gateway: models named *openai* go over llama-server's Chat Completions, the rest over
    its Messages endpoint."""
    return start_ccgate(
        {
            "messages_wire": {"kind": "llamacpp", "url": tool_llama.url},
            "openai_wire": {"kind": "llamacpp", "url": tool_llama.url, "dialect": "openai"},
        },
        extra={
            "rules": [
                {"name": "openai", "when": {"model": "*openai*"}, "to": ["openai_wire"]},
                {"name": "default", "to": ["messages_wire"]},
            ]
        },
    )


def _model(wire: str) -> str:
    return "local-openai" if wire == "openai" else "local"


@pytest.mark.parametrize("wire", WIRES)
def test_chat_completions_tool_loop_whole(both_wires: Process, wire: str) -> None:
    client = sdk(both_wires)
    messages: list = [{"role": "user", "content": "read a.txt"}]
    raw = client.chat.completions.with_raw_response.create(model=_model(wire), messages=messages, tools=CHAT_TOOLS)
    assert raw.headers["x-ccgate-backend"] == f"{'openai' if wire == 'openai' else 'messages'}_wire"
    first = raw.parse()
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and first.object == "chat.completion"
    [call] = choice.message.tool_calls
    assert call.function.name == "Read" and json.loads(call.function.arguments) == {"file_path": "a.txt"}
    assert first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "hi"},
    ]
    second = client.chat.completions.create(model=_model(wire), messages=messages, tools=CHAT_TOOLS)
    assert second.choices[0].message.content == "The file a.txt says hi."
    assert second.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("wire", WIRES)
def test_chat_completions_tool_loop_streamed_with_usage(both_wires: Process, wire: str) -> None:
    client = sdk(both_wires)
    stream = client.chat.completions.create(
        model=_model(wire),
        messages=[{"role": "user", "content": "read a.txt"}],
        tools=CHAT_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    calls = [c for chunk in chunks for choice in chunk.choices for c in choice.delta.tool_calls or ()]
    assert calls[0].id and calls[0].function.name == "Read"
    arguments = "".join(c.function.arguments or "" for c in calls)
    assert json.loads(arguments) == {"file_path": "a.txt"}
    finishes = [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    assert finishes == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens > 0

    followed = client.chat.completions.create(
        model=_model(wire),
        messages=[
            {"role": "user", "content": "read a.txt"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": calls[0].id, "type": "function", "function": {"name": "Read", "arguments": arguments}}
                ],
            },
            {"role": "tool", "tool_call_id": calls[0].id, "content": "hi"},
        ],
        tools=CHAT_TOOLS,
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in followed if chunk.choices)
    assert text == "The file a.txt says hi."


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [False, True])
def test_responses_function_call_loop(both_wires: Process, wire: str, stream: bool) -> None:
    client = sdk(both_wires)
    history: list = [{"role": "user", "content": [{"type": "input_text", "text": "read a.txt"}]}]

    def turn() -> openai.types.responses.Response:
        kwargs = {"model": _model(wire), "input": history, "tools": RESPONSES_TOOLS, "store": False}
        if not stream:
            return client.responses.create(**kwargs)
        with client.responses.stream(**kwargs) as events:
            kinds = [event.type for event in events]
            assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
            return events.get_final_response()

    first = turn()
    assert first.status == "completed"
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "Read" and json.loads(call.arguments) == {"file_path": "a.txt"}
    assert first.usage.input_tokens > 0
    history += [
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "hi"},
    ]
    second = turn()
    assert second.output_text == "The file a.txt says hi."


def test_errors_come_in_openai_shape_with_the_same_statuses(start_ccgate, tool_llama: Process) -> None:
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": tool_llama.url}})
    client = sdk(gw)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="m", messages=[{"role": "robot", "content": "x"}])
    assert bad.value.status_code == 400 and "messages[0].role" in bad.value.body["message"]
    with pytest.raises(openai.BadRequestError) as stored:
        client.responses.create(model="m", input="hi", previous_response_id="resp_1")
    assert "previous_response_id" in stored.value.body["message"]
    for path in ("/v1/chat/completions", "/v1/responses"):
        for body in (b"{not json", b"[]", b"\xff\xfe"):
            r = httpx.post(gw.url + path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400 and set(r.json()) == {"error"}, r.text
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(gw.url + "/v1/chat/completions").json()["error"]["code"] == "invalid_request_error"  # 405
    # the Anthropic dialect keeps its own shape
    assert httpx.post(gw.url + "/v1/messages", content=b"[]").json()["type"] == "error"


def test_every_backend_down_is_an_openai_error(start_ccgate) -> None:
    from tests.harness.procs import free_port

    gw = start_ccgate({"local": {"kind": "llamacpp", "url": f"http://127.0.0.1:{free_port()}"}})
    with pytest.raises(openai.InternalServerError) as down:
        sdk(gw).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert down.value.status_code == 529 and down.value.body["code"] == "overloaded_error"


def test_models_in_the_callers_shape(start_ccgate, tool_llama: Process) -> None:
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": tool_llama.url}})
    listed = sdk(gw).models.list()
    assert listed.data and all(m.object == "model" for m in listed.data)
    anthropic_shape = httpx.get(gw.url + "/v1/models", headers={"anthropic-version": "2023-06-01"}).json()
    assert anthropic_shape["data"][0]["type"] == "model" and "object" not in anthropic_shape


def test_calls_written_as_text_come_out_as_calls_in_each_dialect(start_ccgate, start_llama_server) -> None:
    """The chatml template has no tool support: the model's `<tool_call>` text reaches the guard,
    which turns it into a structured call, here in each OpenAI shape."""
    chatml = start_llama_server("tool", "-np", "1", "--chat-template", "chatml")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": chatml.url}})
    client = sdk(gw)
    for stream in (False, True):
        chat = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "read a.txt"}], tools=CHAT_TOOLS, stream=stream
        )
        if stream:
            chunks = list(chat)
            calls = [c for chunk in chunks for ch in chunk.choices for c in ch.delta.tool_calls or ()]
            text = "".join(ch.delta.content or "" for chunk in chunks for ch in chunk.choices)
        else:
            calls, text = chat.choices[0].message.tool_calls, chat.choices[0].message.content or ""
        assert "<tool_call>" not in text
        assert calls[0].function.name == "Read"
        arguments = "".join(c.function.arguments or "" for c in calls)
        assert json.loads(arguments) == {"file_path": "a.txt"}
    response = client.responses.create(model="m", input="read a.txt", tools=RESPONSES_TOOLS, store=False)
    assert [item.type for item in response.output] == ["function_call"]
    assert json.loads(response.output[0].arguments) == {"file_path": "a.txt"}


GRAMMAR = 'root ::= "forced by grammar"'  # llama-server's own field: no translation carries it


def _logged(gw: Process) -> list[dict]:
    return [json.loads(line) for line in gw.log.read_text().splitlines() if line.startswith('{"ts"')]


def test_a_chat_body_reaches_llama_server_as_the_client_sent_it(start_ccgate, text_llama: Process) -> None:
    """Chat Completions clients go to llama-server's own /v1/chat/completions with their body
    (model, slot and stream options set): a field only llama-server knows still works. A rule
    with a transform changes the request, so that one is sent as the canonical request."""
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": text_llama.url}},
        extra={
            "rules": [
                {"name": "capped", "when": {"model": "*capped*"}, "to": ["local"], "transform": {"max_tokens": 64}},
                {"name": "default", "to": ["local"]},
            ]
        },
    )
    ask = {"messages": [{"role": "user", "content": "hi"}], "grammar": GRAMMAR}
    for stream in (False, True):
        body = {"model": "m", "stream": stream, **ask}
        if stream:
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=body, timeout=60) as r:
                lines = [line[6:] for line in r.iter_lines() if line.startswith("data: {")]
            text = "".join(
                json.loads(line)["choices"][0]["delta"].get("content") or "" for line in lines if '"choices":[{' in line
            )
        else:
            text = httpx.post(gw.url + "/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"][
                "content"
            ]
        assert text == "forced by grammar"
    capped = httpx.post(gw.url + "/v1/chat/completions", json={"model": "capped", **ask}, timeout=60).json()
    assert capped["choices"][0]["message"]["content"] == "Hello from the scripted model."
    responses = httpx.post(gw.url + "/v1/responses", json={"model": "m", "input": "hi", "grammar": GRAMMAR}, timeout=60)
    assert responses.json()["output"][0]["content"][0]["text"] == "Hello from the scripted model."
    said = [(e["dialect"], e["rule"], e["passthrough"]) for e in _logged(gw) if e.get("op") == "messages"]
    assert said == [
        ("chat", "default", True),
        ("chat", "default", True),
        ("chat", "capped", False),
        ("responses", "default", False),
    ]


def test_a_conversation_from_the_local_model_continues_in_the_cloud(start_ccgate, standin: Process) -> None:
    """The history carries the local model's reasoning, which the Anthropic API never signed:
    the handoff takes it out, in both OpenAI dialects, and the cloud answers the tool loop."""
    gw = start_ccgate({"cloud": {"kind": "anthropic", "url": standin.url}})
    client = sdk(gw)
    chat = client.chat.completions.create(
        model="claude-sonnet-4-5",
        tools=CHAT_TOOLS,
        messages=[
            {"role": "user", "content": "read a.txt"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "I should read a.txt first.",
                "tool_calls": [
                    {
                        "id": "call_local_1",
                        "type": "function",
                        "function": {"name": "Read", "arguments": '{"file_path": "a.txt"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_local_1", "content": "hi"},
        ],
    )
    assert chat.choices[0].message.content == "The file a.txt says hi (from the cloud)."
    response = client.responses.create(
        model="claude-sonnet-4-5",
        tools=RESPONSES_TOOLS,
        store=False,
        input=[
            {"role": "user", "content": "read a.txt"},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "read it"}]},
            {"type": "function_call", "call_id": "call_local_2", "name": "Read", "arguments": '{"file_path": "a.txt"}'},
            {"type": "function_call_output", "call_id": "call_local_2", "output": "hi"},
        ],
    )
    assert response.output_text == "The file a.txt says hi (from the cloud)."
    sent = httpx.get(standin.url + "/_requests", timeout=10).json()
    assert len(sent) == 2 and "thinking" not in json.dumps(sent)
