"""A cheap token estimate for routing and for servers that cannot count: no tokenizer on the hot path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

# Claude Code's 76 KB first request is ~20k tokens with real tokenizers: ~3.8 bytes a token.
BYTES_PER_TOKEN = 3.8
# An image costs about (width * height) / 750 tokens, at most ~1,600 once resized (Anthropic's
# rule of thumb); its base64 bytes say nothing about that.
TOKENS_PER_IMAGE = 1600


def estimate_input_tokens(raw: dict[str, Any], size: int | None = None) -> int:
    """`size`: the JSON body's length when the caller has it (saves re-encoding ~80 KB)."""
    if size is None:
        size = sum(len(msgspec.json.encode(p)) for p in (raw.get("system"), raw.get("tools"), raw.get("messages")) if p)
    images = 0
    for source in _binary_sources(raw.get("messages")):
        data = source.get("data")
        if isinstance(data, str):
            size -= len(data)
        images += 1
    return max(1, round(size / BYTES_PER_TOKEN) + images * TOKENS_PER_IMAGE)


def _binary_sources(messages: Any) -> Iterator[dict[str, Any]]:
    """The base64 `source` of every image or PDF, tool results included."""
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            nested = block.get("content") if block.get("type") == "tool_result" else None
            for item in [block, *(nested if isinstance(nested, list) else ())]:
                source = item.get("source") if isinstance(item, dict) else None
                if isinstance(source, dict) and source.get("type") == "base64":
                    yield source
