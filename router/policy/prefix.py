"""The prompt as a chain of block hashes, so any request's longest known prefix is a few lookups.

The request is first made canonical: what changes on every request without changing what the
model reads is dropped (Claude Code's `x-anthropic-billing-header` system block, which local
backends are not sent either; `cache_control` markers; `metadata`), and system, tools and
messages are serialised in that order with sorted keys, so key order never matters. The bytes
are cut in BLOCK-sized blocks, each hashed together with the hash before it: equal hashes at
position i mean the whole prompt up to the end of block i is equal. Only whole blocks count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

BLOCK = 2048  # bytes of canonical prompt per block: ~500 tokens, ~40 blocks for Claude Code's first turn
BILLING_HEADER = "x-anthropic-billing-header:"
VOLATILE_FIELDS = ("cache_control",)


def canonical(raw: Mapping[str, Any]) -> bytes:
    return b"".join(_parts(raw))


def block_hashes(raw: Mapping[str, Any]) -> list[str]:
    """Hex hashes of the canonical prompt's whole blocks, each chained on the one before."""
    return hashed(raw)[0]


def hashed(raw: Mapping[str, Any]) -> tuple[list[str], int]:
    """The block hashes and the canonical prompt's length in bytes, from one serialisation."""
    data = canonical(raw)
    hashes: list[str] = []
    previous = b""
    for start in range(0, len(data) - BLOCK + 1, BLOCK):
        digest = hashlib.blake2b(previous + data[start : start + BLOCK], digest_size=12).digest()
        hashes.append(digest.hex())
        previous = digest
    return hashes, len(data)


def without_billing_header(system: Any) -> Any:
    """The system prompt minus Claude Code's per-session billing block (text or block list)."""
    if isinstance(system, list):
        return [
            block
            for block in system
            if not (isinstance(block, dict) and str(block.get("text", "")).startswith(BILLING_HEADER))
        ]
    if isinstance(system, str) and system.startswith(BILLING_HEADER):
        return system.split("\n", 1)[1] if "\n" in system else ""
    return system


def _parts(raw: Mapping[str, Any]) -> Iterator[bytes]:
    system = without_billing_header(raw.get("system"))
    if system:
        yield _encode({"system": _blocks(system)})
    for tool in raw.get("tools") or ():
        yield _encode({"tool": _bare(tool)})
    for message in raw.get("messages") or ():
        if isinstance(message, dict):
            yield _encode({**message, "content": _blocks(message.get("content"))})


def _encode(value: Any) -> bytes:
    return msgspec.json.encode(value, order="sorted") + b"\n"


def _blocks(content: Any) -> Any:
    """Content blocks without their markers; a tool_result's own blocks too. Markers sit only at
    these levels, so tool schemas and call inputs are not walked."""
    if not isinstance(content, list):
        return content
    out = []
    for block in content:
        block = _bare(block)
        if isinstance(block, dict) and isinstance(block.get("content"), list):
            block = {**block, "content": [_bare(b) for b in block["content"]]}
        out.append(block)
    return out


def _bare(value: Any) -> Any:
    if isinstance(value, dict) and any(k in value for k in VOLATILE_FIELDS):
        return {k: v for k, v in value.items() if k not in VOLATILE_FIELDS}
    return value
