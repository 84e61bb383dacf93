"""Rule transforms, applied to the request body before dispatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.policy.loader import PolicyError, parse_policy
from router.policy.transforms import Transform, apply
from router.protocol.anthropic import MessagesRequest, validate

CAPTURE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "claude-code-request-turn1.json").read_text())[
    "body"
]


def test_claude_code_body_for_a_small_local_model() -> None:
    step = Transform(
        model="qwen3-coder",
        max_tokens=8192,
        drop=["context_management", "output_config"],
        cache_control="drop",
        thinking="drop",
        tool_descriptions=200,
    )
    out = apply(step, CAPTURE)
    assert out["model"] == "qwen3-coder" and out["max_tokens"] == 8192
    assert "context_management" not in out and "output_config" not in out and "thinking" not in out
    assert "cache_control" not in json.dumps(out)
    assert all(len(t.get("description", "")) <= 201 for t in out["tools"])
    assert out["tools"][0]["input_schema"] == CAPTURE["tools"][0]["input_schema"]
    validate(out, MessagesRequest)  # still a valid request
    assert "cache_control" in json.dumps(CAPTURE)  # the original is untouched


def test_thinking_blocks_leave_the_history() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "thinking": {"type": "enabled", "budget_tokens": 1000},
        "messages": [
            {"role": "user", "content": "a"},
            {
                "role": "assistant",
                "content": [{"type": "thinking", "thinking": "t", "signature": "s"}, {"type": "text", "text": "b"}],
            },
        ],
    }
    out = apply(Transform(thinking="drop"), body)
    assert "thinking" not in out and out["messages"][1]["content"] == [{"type": "text", "text": "b"}]


def test_system_cut() -> None:
    out = apply(
        Transform(system=10), {"system": [{"type": "text", "text": "123456"}, {"type": "text", "text": "789012"}]}
    )
    assert [b["text"] for b in out["system"]] == ["123456", "7890"]


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        ("{thinking: maybe}", "thinking: expected `drop` or `keep`"),
        ("{max_tokens: 0}", "max_tokens: expected a positive"),
        ("{colour: red}", "unknown field `colour`"),
    ],
)
def test_bad_transforms_are_policy_errors(transform: str, message: str) -> None:
    rules = f"rules:\n  - name: r\n    to: [a]\n    transform: {transform}\n"
    text = "backends:\n  a: {kind: llamacpp, url: 'http://a'}\n" + rules
    with pytest.raises(PolicyError, match=r"p\.yaml:6") as caught:
        parse_policy(text, "p.yaml", {})
    assert message in str(caught.value)
