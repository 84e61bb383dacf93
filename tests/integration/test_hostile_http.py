"""Property tests against the running gateway over HTTP, in each dialect: garbage, almost-valid
and valid bodies all get a well-formed answer in the caller's dialect (a success, or an error of
its shape), never a 500 and never a hang, and the gateway still answers /healthz afterwards."""

from __future__ import annotations

import json

import httpx
import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.api.openapi import document
from tests.harness.procs import Process
from tests.unit.test_fuzz_requests import bodies as anthropic_bodies
from tests.unit.test_fuzz_requests import json_values, scalars

chat_parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_text", "audio", "x"])},
    optional={"text": json_values, "image_url": json_values | st.fixed_dictionaries({"url": json_values})},
)
chat_calls = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "type": json_values,
        "function": st.fixed_dictionaries({}, optional={"name": json_values, "arguments": json_values}),
    },
)
chat_bodies = st.fixed_dictionaries(
    {
        "model": st.text(max_size=5) | st.integers(),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "x"])},
                optional={
                    "content": st.none() | st.text(max_size=5) | st.lists(chat_parts | scalars, max_size=3),
                    "tool_calls": st.lists(chat_calls, max_size=2) | json_values,
                    "tool_call_id": json_values,
                    "reasoning_content": json_values,
                },
            ),
            max_size=4,
        ),
    },
    optional={
        "max_tokens": st.integers(-2, 2**40) | json_values,
        "max_completion_tokens": st.integers(-2, 64) | json_values,
        "tools": st.lists(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["function", "x"])},
                optional={
                    "function": st.dictionaries(st.sampled_from(["name", "parameters", "description"]), json_values)
                },
            ),
            max_size=2,
        )
        | json_values,
        "tool_choice": json_values | st.sampled_from(["auto", "required", "none"]),
        "parallel_tool_calls": json_values,
        "stream": st.booleans(),
        "stream_options": json_values,
        "n": json_values,
        "stop": json_values,
        "temperature": json_values,
    },
)
items = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "x"]),
        "role": st.sampled_from(["user", "assistant", "developer", "system", "x"]),
        "content": st.text(max_size=5) | st.lists(chat_parts | scalars, max_size=2) | json_values,
        "call_id": json_values,
        "name": json_values,
        "arguments": json_values,
        "output": json_values,
        "summary": st.lists(st.fixed_dictionaries({"type": json_values, "text": json_values}), max_size=2),
    },
)
responses_bodies = st.fixed_dictionaries(
    {"model": st.text(max_size=5) | st.integers(), "input": st.text(max_size=5) | st.lists(items, max_size=4)},
    optional={
        "instructions": json_values,
        "max_output_tokens": st.integers(-2, 64) | json_values,
        "tools": st.lists(st.dictionaries(st.sampled_from(["type", "name", "parameters"]), json_values), max_size=2),
        "tool_choice": json_values,
        "previous_response_id": st.none() | st.text(max_size=4),
        "stream": st.booleans(),
        "store": json_values,
    },
)
garbage = st.binary(max_size=64) | st.text(max_size=64).map(str.encode)

# Valid requests with hostile text: any unicode (NUL, lone control characters, RTL marks, ...),
# tool calls and results, streamed or not; these reach llama-server and come back translated.
words = st.text(max_size=40)
read_tool = {"type": "function", "function": {"name": "Read", "parameters": {"type": "object"}}}
valid_chat = st.builds(
    lambda text, answer, stream, with_tools: {
        "model": "m",
        "max_tokens": 16,
        "stream": stream,
        "messages": [
            {"role": "system", "content": text},
            {"role": "user", "content": [{"type": "text", "text": text}]},
            {
                "role": "assistant",
                "content": answer,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "Read", "arguments": json.dumps({"p": text})}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": answer},
        ],
        **({"tools": [read_tool]} if with_tools else {}),
    },
    words,
    words,
    st.booleans(),
    st.booleans(),
)
valid_responses = st.builds(
    lambda text, answer, stream: {
        "model": "m",
        "max_output_tokens": 16,
        "stream": stream,
        "instructions": text,
        "input": [
            {"role": "user", "content": text or "x"},
            {"type": "function_call", "call_id": "c1", "name": "Read", "arguments": json.dumps({"p": answer})},
            {"type": "function_call_output", "call_id": "c1", "output": answer},
        ],
        "tools": [{"type": "function", "name": "Read", "parameters": {"type": "object"}}, {"type": "web_search"}],
    },
    words,
    words,
    st.booleans(),
)
valid_messages = st.builds(
    lambda text, stream: {
        "model": "m",
        "max_tokens": 16,
        "stream": stream,
        "system": text,
        "messages": [{"role": "user", "content": text or "x"}],
    },
    words,
    st.booleans(),
)

PATHS = {"anthropic": "/v1/messages", "chat": "/v1/chat/completions", "responses": "/v1/responses"}


def test_the_document_is_published_and_names_every_model_path(gateway: Process) -> None:
    published = httpx.get(gateway.url + "/openapi.json").json()
    assert published == json.loads(json.dumps(DOCUMENT))
    assert published["openapi"].startswith("3.1") and set(PATHS.values()) <= set(published["paths"])


SUCCESS = {"anthropic": ("type", "message"), "chat": ("object", "chat.completion"), "responses": ("object", "response")}


DOCUMENT = document()  # what GET /openapi.json publishes: every answer below must be one it lists


def documented(path: str, r: httpx.Response) -> None:
    """The status is one the document lists for the path, and a JSON body matches its schema."""
    responses = DOCUMENT["paths"][path]["post"]["responses"]
    assert str(r.status_code) in responses, (path, r.status_code, r.text[:200])
    content = responses[str(r.status_code)]["content"]
    if r.headers["content-type"].startswith("application/json"):
        schema = content["application/json"]["schema"]
        rooted = {**schema, "components": DOCUMENT["components"]}  # its $refs point into the document
        errors = [e.message for e in jsonschema_rs.validator_for(rooted).iter_errors(r.json())]
        assert not errors, (path, r.status_code, errors, r.text[:200])


def check(r: httpx.Response, dialect: str) -> None:
    assert r.status_code != 500, r.text[:500]
    documented(PATHS[dialect], r)
    if r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"):
        assert r.text.rstrip().endswith(("[DONE]", "}")), r.text[-300:]  # it ended, with a complete event
        return
    body = r.json()
    if r.status_code == 200:
        field, value = SUCCESS[dialect]
        assert body[field] == value, body
        return
    if dialect == "anthropic":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
    else:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body


@pytest.fixture
def gateway(start_ccgate, text_llama: Process) -> Process:
    # the tool guard's retries and fallbacks are not what this measures: one backend, answers fast
    return start_ccgate({"local": {"kind": "llamacpp", "url": text_llama.url}})


def _send(gw: Process, dialect: str, payload: bytes) -> None:
    with httpx.Client(timeout=60) as client:
        r = client.post(gw.url + PATHS[dialect], content=payload, headers={"content-type": "application/json"})
        check(r, dialect)


HYPOTHESIS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@HYPOTHESIS
@given(body=anthropic_bodies | garbage)
def test_any_messages_body(gateway: Process, body: dict | bytes) -> None:
    _send(gateway, "anthropic", body if isinstance(body, bytes) else json.dumps(body).encode())


@HYPOTHESIS
@given(body=chat_bodies | garbage)
def test_any_chat_completions_body(gateway: Process, body: dict | bytes) -> None:
    _send(gateway, "chat", body if isinstance(body, bytes) else json.dumps(body).encode())


@HYPOTHESIS
@given(body=responses_bodies | garbage)
def test_any_responses_body(gateway: Process, body: dict | bytes) -> None:
    _send(gateway, "responses", body if isinstance(body, bytes) else json.dumps(body).encode())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=valid_chat, responses=valid_responses, messages=valid_messages)
def test_valid_bodies_with_hostile_text_are_answered(
    gateway: Process, chat: dict, responses: dict, messages: dict
) -> None:
    """Any unicode in every text field, tools or not, streamed or not: a 200 in each dialect."""
    for dialect, body in (("chat", chat), ("responses", responses), ("anthropic", messages)):
        with httpx.Client(timeout=60) as client:
            r = client.post(gateway.url + PATHS[dialect], json=body)
        assert r.status_code == 200, (dialect, r.text[:300])
        check(r, dialect)


def test_the_gateway_still_serves_after_the_fuzzing(gateway: Process) -> None:
    """Each property test above ends with its gateway alive; here, one more round of the worst
    shapes in a row on one gateway, then /healthz and a real answer."""
    for dialect in PATHS:
        for payload in (b"", b"\x00" * 32, b"\xff\xfe{", b"[" * 100_000 + b"]" * 100_000, b'{"model": "m"}'):
            _send(gateway, dialect, payload)
    assert httpx.get(gateway.url + "/healthz").status_code == 200
    answer = httpx.post(
        gateway.url + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
