"""The canonical request: the Anthropic Messages shape, validated once with msgspec.

Only what the gateway reads is typed; everything else stays in the raw body, which is what a
backend that speaks the Anthropic dialect receives, so fields this module does not know about
(new betas, new block types) still reach it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec

Role = Literal["user", "assistant", "system"]
ContentBlock = dict[str, Any]
T = TypeVar("T")


MaxTokens = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]

# Fields each known content block type must carry; unknown types go through to Anthropic backends.
BLOCK_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "text": {"text": str},
    "image": {"source": dict},
    "document": {"source": dict},
    "tool_use": {"id": str, "name": str, "input": dict},
    "tool_result": {"tool_use_id": str},
    "thinking": {"thinking": str},
    "redacted_thinking": {"data": str},
}
_TYPE_NAMES = {str: "str", dict: "object", list: "array"}


class Message(msgspec.Struct, frozen=True):
    role: Role
    content: str | list[ContentBlock]


class MessagesRequest(msgspec.Struct, frozen=True):
    model: str
    messages: list[Message]
    max_tokens: MaxTokens
    system: str | list[ContentBlock] | None = None
    tools: list[ContentBlock] | None = None
    tool_choice: dict[str, Any] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    thinking: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class CountTokensRequest(msgspec.Struct, frozen=True):
    model: str
    messages: list[Message]
    system: str | list[ContentBlock] | None = None
    tools: list[ContentBlock] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class InvalidRequest(ValueError):
    """The client's body is not a valid request; the message names the field."""


def decode_body(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequest("request body is empty: expected a JSON object")
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidRequest("request body nests JSON too deeply") from None
    if not isinstance(raw, dict):
        raise InvalidRequest(f"request body must be a JSON object, got {type(raw).__name__}")
    return raw


def validate(raw: dict[str, Any], kind: type[T]) -> T:
    try:
        request = msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(_field_message(str(exc))) from None
    _check_blocks(request)
    return request


def _field_message(text: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.max_tokens`"; say it the client's way.
    message, _, where = text.partition(" - at `")
    if where:
        field = where.rstrip("`").removeprefix("$").lstrip(".")
        return f"{field}: {message}" if field else message
    return message


def _check_blocks(request: Any) -> None:
    if not request.messages:
        raise InvalidRequest("messages: at least one message is required")
    for i, message in enumerate(request.messages):
        if isinstance(message.content, list):
            for j, block in enumerate(message.content):
                _check_block(block, f"messages[{i}].content[{j}]")
    if isinstance(request.system, list):
        for j, block in enumerate(request.system):
            if block.get("type") != "text" or not isinstance(block.get("text"), str):
                raise InvalidRequest(f"system[{j}]: expected a text block with a string `text`")
    for j, tool in enumerate(request.tools or ()):
        if not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"tools[{j}].name: Field required")
        if "input_schema" in tool and not isinstance(tool["input_schema"], dict):
            raise InvalidRequest(f"tools[{j}].input_schema: Expected `object`")


def _check_block(block: ContentBlock, where: str) -> None:
    kind = block.get("type")
    if not isinstance(kind, str):
        raise InvalidRequest(f"{where}.type: Field required")
    for field, expected in BLOCK_FIELDS.get(kind, {}).items():
        value = block.get(field)
        if value is None:
            raise InvalidRequest(f"{where}.{field}: Field required for a {kind} block")
        if not isinstance(value, expected):
            raise InvalidRequest(
                f"{where}.{field}: Expected `{_TYPE_NAMES.get(expected, expected)}`, got `{type(value).__name__}`"
            )
    if kind == "tool_result":
        content = block.get("content", "")
        if not isinstance(content, str | list):
            raise InvalidRequest(f"{where}.content: Expected `str | array`")
        if isinstance(content, list):
            for k, inner in enumerate(content):
                if not isinstance(inner, dict):
                    raise InvalidRequest(
                        f"{where}.content[{k}]: Expected a content block object, got `{type(inner).__name__}`"
                    )
                _check_block(inner, f"{where}.content[{k}]")


def text_of(content: str | list[ContentBlock] | None) -> str:
    """The plain text of a string or a list of blocks (non-text blocks are skipped)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def top_fields(body: bytes) -> dict[str, msgspec.Raw]:
    """A JSON object's top-level fields, each as its bytes (one scan, nothing decoded)."""
    return msgspec.json.decode(body, type=dict[str, msgspec.Raw])


def with_fields(
    body: bytes, changes: dict[str, Any], drop: tuple[str, ...] = (), top: dict[str, msgspec.Raw] | None = None
) -> bytes:
    """The JSON object `body` with top-level fields set or removed; every other field keeps its
    exact bytes (a thinking block the Anthropic API signed must come back unmodified). `top`:
    `body`'s top_fields when the caller has them already."""
    top = dict(top) if top is not None else top_fields(body)
    for key in drop:
        top.pop(key, None)
    for key, value in changes.items():
        top[key] = msgspec.Raw(msgspec.json.encode(value))
    return msgspec.json.encode(top)
