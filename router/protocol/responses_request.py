"""OpenAI Responses request → the canonical request (Anthropic Messages shape), pure.

Agents send `store: false` and the whole conversation as `input` items each time (Codex CLI
does), so the gateway keeps nothing between requests: `previous_response_id` is refused with a
400 that says so. Hosted tools (web_search, file_search, ...) run inside OpenAI's own API; no
backend of a ccgate policy can run them, so they are dropped, and the caller is told which.
"""

from __future__ import annotations

from typing import Any

from router.protocol.anthropic import ContentBlock, InvalidRequest
from router.protocol.chat_request import (
    append_turn,
    common_fields,
    instruction,
    max_tokens_of,
    tool_choice_of,
    tool_use,
    tools_of,
    user_blocks,
)


def responses_to_canonical(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The canonical request for a Responses body, and the hosted tool types dropped from it;
    InvalidRequest names the bad field."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required (a string)")
    if body.get("previous_response_id") is not None:
        raise InvalidRequest(
            "previous_response_id: this gateway does not store responses; send the whole conversation "
            "as `input` items with `store: false`"
        )
    system: list[ContentBlock] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        system.append({"type": "text", "text": body["instructions"]})
    elif body.get("instructions") is not None and not isinstance(body.get("instructions"), str):
        raise InvalidRequest("instructions: Expected `str`")
    messages = _items(body.get("input"), system)
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens_of(body, "max_output_tokens"),
    }
    if system:
        out["system"] = system
    out.update(common_fields(body))
    raw_tools = body.get("tools")
    tools = tools_of(raw_tools, "tools")
    dropped = sorted({t.get("type", "") for t in raw_tools or () if t.get("type", "function") != "function"})
    if tools:
        out["tools"] = tools
        choice = tool_choice_of(_choice(body.get("tool_choice")), body.get("parallel_tool_calls"))
        if choice:
            out["tool_choice"] = choice
    return out, dropped


def _choice(choice: Any) -> Any:
    # Responses names a forced function flat ({type: function, name}); hosted choices mean auto here.
    if isinstance(choice, dict) and choice.get("type") not in ("function", None):
        return "auto"
    return choice


def _items(items: Any, system: list[ContentBlock]) -> list[dict[str, Any]]:
    if isinstance(items, str):
        if not items:
            raise InvalidRequest("input: must not be empty")
        return [{"role": "user", "content": [{"type": "text", "text": items}]}]
    if not isinstance(items, list) or not items:
        raise InvalidRequest("input: expected a string or a non-empty array of items")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where}: Expected `object`")
        kind = item.get("type", "message")
        if kind == "message":
            _message(item, where, system, messages)
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise InvalidRequest(f"{where}: a function_call needs `call_id` and `name`")
            append_turn(messages, "assistant", [tool_use(call_id, name, item.get("arguments"))])
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise InvalidRequest(f"{where}.call_id: Field required")
            result = {"type": "tool_result", "tool_use_id": call_id, "content": _output(item.get("output"), where)}
            append_turn(messages, "user", [result])
        elif kind == "reasoning":
            parts = item.get("summary") if isinstance(item.get("summary"), list) else []
            summary = "".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
            if summary:  # what the model thought, for a model that reads its own thinking back
                append_turn(messages, "assistant", [{"type": "thinking", "thinking": summary, "signature": ""}])
        elif kind in ("custom_tool_call", "local_shell_call", "web_search_call", "item_reference"):
            raise InvalidRequest(f"{where}.type: {kind!r} items are not supported by this gateway")
        else:
            raise InvalidRequest(f"{where}.type: unknown input item type {kind!r}")
    if not messages:
        raise InvalidRequest("input: at least one user or assistant message is required")
    return messages


def _message(item: dict[str, Any], where: str, system: list[ContentBlock], messages: list[dict[str, Any]]) -> None:
    role = item.get("role")
    content = item.get("content")
    if role in ("system", "developer"):
        text = "".join(b.get("text", "") for b in user_blocks(content, f"{where}.content") if b["type"] == "text")
        instruction(system, messages, text)
    elif role in ("user", "assistant"):
        blocks = user_blocks(content, f"{where}.content")
        if role == "assistant":
            blocks = [b for b in blocks if b["type"] == "text"]
        append_turn(messages, role, blocks)
    else:
        raise InvalidRequest(f"{where}.role: expected user, assistant, system or developer")


def _output(output: Any, where: str) -> str | list[ContentBlock]:
    if output is None or isinstance(output, str):
        return output or ""
    if isinstance(output, list):
        return user_blocks(output, f"{where}.output")
    raise InvalidRequest(f"{where}.output: Expected `str | array`")
