"""A rule's `transform:` steps, applied to the request body before it goes to any target (pure).

transform:
  model: qwen3-coder            # rewrite the model name
  max_tokens: 8192              # cap max_tokens
  drop: [context_management, output_config, metadata]   # top-level fields
  cache_control: drop           # strip cache_control markers everywhere
  thinking: drop                # remove `thinking` and thinking blocks from the history
  tool_descriptions: 300        # cut each tool's description to this many characters
  system: 4000                  # cut the system prompt to this many characters
"""

from __future__ import annotations

from typing import Any

import msgspec

Body = dict[str, Any]


class Transform(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    model: str | None = None
    max_tokens: int | None = None
    drop: list[str] = []
    cache_control: str | None = None  # "drop"
    thinking: str | None = None  # "drop" | "keep"
    tool_descriptions: int | None = None
    system: int | None = None

    def __post_init__(self) -> None:
        if self.cache_control not in (None, "drop"):
            raise ValueError("cache_control: expected `drop`")
        if self.thinking not in (None, "drop", "keep"):
            raise ValueError("thinking: expected `drop` or `keep`")
        for name, value in (
            ("max_tokens", self.max_tokens),
            ("tool_descriptions", self.tool_descriptions),
            ("system", self.system),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name}: expected a positive number")


def apply(step: Transform, body: Body) -> Body:
    out = {k: v for k, v in body.items() if k not in step.drop}
    if step.model:
        out["model"] = step.model
    if step.max_tokens and isinstance(out.get("max_tokens"), int):
        out["max_tokens"] = min(out["max_tokens"], step.max_tokens)
    if step.thinking == "drop":
        out.pop("thinking", None)
        out["messages"] = [_without_thinking(m) for m in out.get("messages", [])]
    if step.tool_descriptions and out.get("tools"):
        out["tools"] = [_cut(t, "description", step.tool_descriptions) for t in out["tools"]]
    if step.system and out.get("system"):
        out["system"] = _cut_system(out["system"], step.system)
    if step.cache_control == "drop":
        out = _strip(out, "cache_control")
    return out


def _without_thinking(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if not isinstance(content, list):
        return message
    kept = [b for b in content if not (isinstance(b, dict) and b.get("type") in ("thinking", "redacted_thinking"))]
    return {**message, "content": kept or [{"type": "text", "text": ""}]}


def _cut(item: dict[str, Any], key: str, limit: int) -> dict[str, Any]:
    value = item.get(key)
    if isinstance(value, str) and len(value) > limit:
        return {**item, key: value[:limit].rstrip() + "…"}
    return item


def _cut_system(system: str | list[dict[str, Any]], limit: int) -> str | list[dict[str, Any]]:
    if isinstance(system, str):
        return system[:limit]
    out: list[dict[str, Any]] = []
    left = limit
    for block in system:
        text = block.get("text", "")
        if left <= 0:
            break
        out.append({**block, "text": text[:left]})
        left -= len(text)
    return out


def _strip(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v, key) for k, v in value.items() if k != key}
    if isinstance(value, list):
        return [_strip(v, key) for v in value]
    return value
