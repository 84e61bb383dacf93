"""A cheap token estimate for when no backend can count: no tokenizer on the hot path."""

from __future__ import annotations

from typing import Any

import msgspec

# Claude Code's 78 KB first request is ~20k tokens with real tokenizers: ~3.8 bytes a token.
BYTES_PER_TOKEN = 3.8


def estimate_input_tokens(raw: dict[str, Any]) -> int:
    parts = [raw.get("system"), raw.get("tools"), raw.get("messages")]
    size = sum(len(msgspec.json.encode(p)) for p in parts if p)
    return max(1, round(size / BYTES_PER_TOKEN))
