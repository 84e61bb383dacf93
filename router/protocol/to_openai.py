"""Anthropic Messages request → OpenAI Chat Completions request (pure)."""

from __future__ import annotations

from typing import Any

import msgspec

from router.protocol.anthropic import ContentBlock, InvalidRequest, MessagesRequest, text_of

OpenAIMessage = dict[str, Any]


def to_openai_request(request: MessagesRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": _messages(request), "max_tokens": request.max_tokens}
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    tools = [_tool(t) for t in request.tools or () if _is_client_tool(t)]
    if tools:
        body["tools"] = tools
        choice = request.tool_choice or {}
        if choice:
            body["tool_choice"] = _tool_choice(choice)
        if choice.get("disable_parallel_tool_use"):
            body["parallel_tool_calls"] = False
    return body


def _is_client_tool(tool: ContentBlock) -> bool:
    # Server tools (web_search_*, code_execution_*, ...) run inside Anthropic's API only.
    return tool.get("type") in (None, "custom")


def _tool(tool: ContentBlock) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": tool["name"],
        "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any]) -> str | dict[str, Any]:
    kind = choice.get("type")
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    return "auto"


def _messages(request: MessagesRequest) -> list[OpenAIMessage]:
    out: list[OpenAIMessage] = []
    system = text_of(request.system)
    if system:
        out.append({"role": "system", "content": system})
    for i, message in enumerate(request.messages):
        if isinstance(message.content, str):
            out.append({"role": message.role, "content": message.content})
        elif message.role == "assistant":
            out.append(_assistant(message.content))
        elif message.role == "system":
            out.append({"role": "system", "content": text_of(message.content)})
        else:
            out.extend(_user(message.content, i))
    return out


def _assistant(blocks: list[ContentBlock]) -> OpenAIMessage:
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        kind = block["type"]
        if kind == "text":
            text.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use":
            arguments = msgspec.json.encode(block.get("input") or {}).decode()
            calls.append(
                {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": arguments}}
            )
    message: OpenAIMessage = {"role": "assistant", "content": "".join(text) or None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    return message


def _user(blocks: list[ContentBlock], index: int) -> list[OpenAIMessage]:
    """Tool results become `tool` messages, which OpenAI wants right after the assistant turn."""
    tool_messages: list[OpenAIMessage] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block["type"]
        if kind == "tool_result":
            content, images = _tool_result_content(block.get("content"), f"messages[{index}].content[{j}]")
            tool_messages.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": content})
            parts.extend(images)
        else:
            part = _user_part(block, f"messages[{index}].content[{j}]")
            if part is not None:
                parts.append(part)
    out = tool_messages
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if only_text else parts})
    return out


def _user_part(block: ContentBlock, where: str) -> dict[str, Any] | None:
    kind = block["type"]
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block.get("source") or {}, where)}}
    if kind == "document":
        source = block.get("source") or {}
        if source.get("type") == "text":
            return {"type": "text", "text": source.get("data", "")}
        raise InvalidRequest(
            f"{where}: document blocks of source type {source.get('type')!r} need an Anthropic backend"
        )
    if kind in ("thinking", "redacted_thinking"):
        return None
    raise InvalidRequest(f"{where}.type: content block type {kind!r} cannot be sent to an OpenAI-compatible backend")


def _image_url(source: dict[str, Any], where: str) -> str:
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url":
        return str(source.get("url", ""))
    raise InvalidRequest(f"{where}.source.type: expected 'base64' or 'url'")


def _tool_result_content(content: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    """Text for the tool message; images ride along in the next user message."""
    if content is None or isinstance(content, str):
        return content or "", []
    texts: list[str] = []
    images: list[dict[str, Any]] = []
    for block in content:
        if block.get("type") == "image":
            images.append({"type": "image_url", "image_url": {"url": _image_url(block.get("source") or {}, where)}})
        elif block.get("type") == "text":
            texts.append(block.get("text", ""))
    return "\n".join(texts), images
