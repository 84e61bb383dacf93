"""The canonical request is validated once, with messages that name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.protocol.anthropic import CountTokensRequest, InvalidRequest, MessagesRequest, decode_body, validate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("name", ["claude-code-request-turn1.json", "claude-code-request-turn2-tool-result.json"])
def test_real_claude_code_requests_validate(name: str) -> None:
    body = json.loads((FIXTURES / name).read_text())["body"]
    request = validate(decode_body(json.dumps(body).encode()), MessagesRequest)
    assert request.stream is True and len(request.tools or []) == 24
    assert any(m.role == "system" for m in request.messages)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            {"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
            "max_tokens: Expected `int` >= 1",
        ),
        ({"model": "m", "max_tokens": 5, "messages": []}, "messages: at least one"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "system": [{"type": "image"}],
                "messages": [{"role": "user", "content": "x"}],
            },
            "system[0]",
        ),
        (
            {
                "model": "m",
                "max_tokens": 5,
                "tools": [{"description": "d"}],
                "messages": [{"role": "user", "content": "x"}],
            },
            "tools[0].name",
        ),
        ({"model": "m", "max_tokens": 5, "stream": "yes", "messages": [{"role": "user", "content": "x"}]}, "stream"),
    ],
)
def test_errors_name_the_field(body: dict, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate(body, MessagesRequest)
    assert message in str(caught.value)


def test_count_tokens_needs_no_max_tokens() -> None:
    assert validate({"model": "m", "messages": [{"role": "user", "content": "x"}]}, CountTokensRequest).model == "m"


@pytest.mark.parametrize(("raw", "message"), [(b"", "empty"), (b"{", "not valid JSON"), (b"3", "JSON object")])
def test_body_must_be_a_json_object(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decode_body(raw)


def msg(*blocks: dict) -> dict:
    return {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": list(blocks)}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (msg({"type": "tool_use", "name": "A", "input": {}}), "messages[0].content[0].id: Field required"),
        (
            msg({"type": "tool_use", "id": "t", "name": "A", "input": "x"}),
            "content[0].input: Expected `object`, got `str`",
        ),
        (msg({"type": "tool_result"}), "content[0].tool_use_id: Field required"),
        (msg({"type": "tool_result", "tool_use_id": "t", "content": 5}), "content[0].content: Expected `str | array`"),
        (msg({"type": "text"}), "content[0].text: Field required"),
        (msg({"type": "text", "text": "a"}, {"type": "image"}), "content[1].source: Field required"),
        ({**msg({"type": "text", "text": "a"}), "max_tokens": 10**30}, "max_tokens: Expected `int` <= 2147483647"),
    ],
)
def test_block_errors_name_the_field(body: dict, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate(body, MessagesRequest)
    assert message in str(caught.value)


def test_unknown_block_types_pass_through() -> None:
    validate(msg({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}), MessagesRequest)


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"[" * 100_000 + b"]" * 100_000, "nests JSON too deeply"), (b'{"model": "\xff"}', "UTF-8")],
)
def test_hostile_bodies(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decode_body(raw)
