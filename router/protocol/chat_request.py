"""OpenAI Chat Completions request → the canonical request (Anthropic Messages shape), pure.

The opposite direction of to_openai.py: that one feeds OpenAI-compatible backends, this one
takes requests from OpenAI-dialect agents (Opencode, Crush, Qwen Code). Fields without an
Anthropic counterpart (seed, penalties, logprobs, response_format, reasoning_effort: the local
model reasons as its template says) are dropped; `n` > 1 is refused with a 400.
"""

from __future__ import annotations

from typing import Any

import msgspec

from router.protocol.anthropic import ContentBlock, InvalidRequest

DEFAULT_MAX_TOKENS = 8192  # OpenAI clients may leave it out; the Anthropic shape needs one
ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def chat_to_canonical(body: dict[str, Any]) -> dict[str, Any]:
    """The canonical request for a Chat Completions body; InvalidRequest names the bad field."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required (a string)")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequest("messages: at least one message is required")
    if (body.get("n") or 1) != 1:
        raise InvalidRequest("n: only one choice per request is supported")
    system, messages = _messages(raw_messages)
    out: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens_of(body)}
    if system:
        out["system"] = system
    out.update(common_fields(body))
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        out["stop_sequences"] = [s for s in stop if isinstance(s, str)]
    tools = tools_of(body.get("tools"), "tools")
    choice = tool_choice_of(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if tools:
        out["tools"] = tools
        if choice:
            out["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out


def common_fields(body: dict[str, Any]) -> dict[str, Any]:
    """`stream`, `temperature` and `top_p`, read the same way in both OpenAI dialects."""
    out: dict[str, Any] = {"stream": True} if body.get("stream") else {}
    for name in ("temperature", "top_p"):
        if isinstance(body.get(name), int | float) and not isinstance(body.get(name), bool):
            out[name] = body[name]
    return out


def max_tokens_of(body: dict[str, Any], *names: str) -> int:
    for name in names or ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidRequest(f"{name}: Expected a positive integer")
        return value
    return DEFAULT_MAX_TOKENS


def tools_of(tools: Any, where: str) -> list[ContentBlock]:
    """Function tools in either OpenAI shape: Chat's `{type, function: {...}}` or Responses' flat one."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise InvalidRequest(f"{where}: Expected `array`")
    out: list[ContentBlock] = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InvalidRequest(f"{where}[{i}]: Expected `object`")
        if not isinstance(tool.get("type", "function"), str):
            raise InvalidRequest(f"{where}[{i}].type: Expected `str`")
        if tool.get("type", "function") != "function":
            continue  # hosted tools: the caller decides (responses.py) whether they are kept
        function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"{where}[{i}].function.name: Field required")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidRequest(f"{where}[{i}].function.parameters: Expected `object`")
        block: ContentBlock = {"name": name, "input_schema": parameters or {"type": "object", "properties": {}}}
        if isinstance(function.get("description"), str):
            block["description"] = function["description"]
        out.append(block)
    return out


def tool_choice_of(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None or choice == "auto":
        out: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function") if isinstance(choice.get("function"), dict) else choice
        if not isinstance(function.get("name"), str):
            raise InvalidRequest("tool_choice.function.name: Field required")
        out = {"type": "tool", "name": function["name"]}
    else:
        raise InvalidRequest("tool_choice: expected 'auto', 'required', 'none' or a function")
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _messages(raw: list[Any]) -> tuple[list[ContentBlock], list[dict[str, Any]]]:
    system: list[ContentBlock] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where}: Expected `object`")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"{where}.role: expected one of {', '.join(ROLES)}")
        content = message.get("content")
        if role in ("system", "developer"):
            instruction(system, messages, _text(content, f"{where}.content"))
        elif role == "user":
            append_turn(messages, "user", user_blocks(content, f"{where}.content"))
        elif role == "assistant":
            append_turn(messages, "assistant", _assistant(message, where))
        else:  # tool (or the legacy function role): a tool_result in a user turn
            call_id = message.get("tool_call_id") or message.get("name")
            if not isinstance(call_id, str):
                raise InvalidRequest(f"{where}.tool_call_id: Field required")
            result = {"type": "tool_result", "tool_use_id": call_id, "content": _text(content, f"{where}.content")}
            append_turn(messages, "user", [result])
    if not messages:
        raise InvalidRequest("messages: at least one user or assistant message is required")
    return system, messages


def instruction(system: list[ContentBlock], messages: list[dict[str, Any]], text: str) -> None:
    """Instructions before the conversation are its system prompt; later ones stay where they are
    (a system-role turn), so the prompt's prefix, and the KV cache holding it, do not change."""
    if not text:
        return
    if messages:
        append_turn(messages, "system", [{"type": "text", "text": text}])
    else:
        system.append({"type": "text", "text": text})


def append_turn(messages: list[dict[str, Any]], role: str, blocks: list[ContentBlock]) -> None:
    """Consecutive turns of one role become one message (tool results, then the user's words)."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}: Expected `str | array`")
    parts: list[str] = []
    for k, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("text", ""), str):
            raise InvalidRequest(f"{where}[{k}]: Expected a text part")
        if part.get("type") in ("text", "input_text", "output_text", None):
            parts.append(part.get("text", ""))
    return "".join(parts)


def user_blocks(content: Any, where: str) -> list[ContentBlock]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}: Expected `str | array`")
    blocks: list[ContentBlock] = []
    for k, part in enumerate(content):
        if not isinstance(part, dict):
            raise InvalidRequest(f"{where}[{k}]: Expected `object`")
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            if not isinstance(part.get("text"), str):
                raise InvalidRequest(f"{where}[{k}].text: Field required")
            blocks.append({"type": "text", "text": part["text"]})
        elif kind in ("image_url", "input_image"):
            url = part.get("image_url")
            if isinstance(url, dict):
                url = url.get("url")
            if not isinstance(url, str) or not url:
                raise InvalidRequest(f"{where}[{k}].image_url: Field required")
            blocks.append({"type": "image", "source": image_source(url)})
        else:
            raise InvalidRequest(f"{where}[{k}].type: content part type {kind!r} is not supported")
    return blocks


def image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0] or "image/png"
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _assistant(message: dict[str, Any], where: str) -> list[ContentBlock]:
    blocks: list[ContentBlock] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        blocks.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _text(message.get("content"), f"{where}.content")
    if text:
        blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise InvalidRequest(f"{where}.tool_calls: Expected `array`")
    for k, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest(f"{where}.tool_calls[{k}].function.name: Field required")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidRequest(f"{where}.tool_calls[{k}].id: Field required")
        blocks.append(tool_use(call_id, function["name"], function.get("arguments")))
    return blocks


def tool_use(call_id: str, name: str, arguments: Any) -> ContentBlock:
    """A past call as a tool_use block. Arguments the model once wrote as broken JSON become
    `{}`: refusing them would make the whole conversation unusable from then on."""
    parsed: Any = arguments
    if isinstance(arguments, str):
        try:
            parsed = msgspec.json.decode(arguments) if arguments.strip() else {}
        except msgspec.DecodeError:
            parsed = {}
    return {"type": "tool_use", "id": call_id, "name": name, "input": parsed if isinstance(parsed, dict) else {}}
