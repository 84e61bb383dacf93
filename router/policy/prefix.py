"""The prompt as a chain of block hashes, so any request's longest known prefix is a few lookups.

The prompt is the request's system, tools and messages, in that order, as the bytes the client
sent (one scan of the body finds them; nothing is decoded or re-encoded), minus what changes on
every request without changing what the model reads: Claude Code's `x-anthropic-billing-header`
system block (local backends are not sent it either) and `cache_control` markers, which move to
the newest message each turn. The bytes are cut in BLOCK-sized blocks; block i's hash is the
hash of the whole prompt up to its end, so equal hashes at i mean equal prompts up to there.
Only whole blocks count.

A client writes one conversation the same way every turn (the same key order and spacing), so
its own bytes are as good a key as a re-encoded canonical form, at a fifth of the cost: bench/
prompt_size.py measures it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

BLOCK = 2048  # bytes of prompt per block: ~500 tokens, ~40 blocks for Claude Code's first turn
BILLING_HEADER = "x-anthropic-billing-header:"
BILLING_MARK = BILLING_HEADER.encode()
MARKER_NAME = b'"cache_control"'
# A marker's value is a small flat object ({"type":"ephemeral","ttl":"1h"}). An unescaped quote
# only occurs at a string's edge, so in valid JSON this matches a key, never text inside a string.
MARKER = re.compile(rb'"cache_control"\s*:\s*\{[^{}]*\}')
SPACE = b" \t\r\n"
NULL = msgspec.Raw(b"null")


def block_hashes(body: bytes | Mapping[str, Any]) -> list[str]:
    """Hex hashes of the prompt's whole blocks, each covering the prompt up to its end."""
    return hashed(body)[0]


def hashed(body: bytes | Mapping[str, Any]) -> tuple[list[str], int]:
    """The block hashes and the prompt's length in bytes. `body`: the request as sent (a mapping
    is encoded first: for callers holding a decoded request)."""
    data = body if isinstance(body, bytes) else msgspec.json.encode(body)
    try:
        top = msgspec.json.decode(data, type=dict[str, msgspec.Raw])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return [], 0  # not a request's shape: nothing to look up (validation says why elsewhere)
    return hashed_fields(top)


def hashed_fields(top: Mapping[str, msgspec.Raw]) -> tuple[list[str], int]:
    """hashed() of a body already read into its top-level fields (protocol.anthropic.top_fields).

    The pieces (the parts, minus their markers) are hashed where they lie: no joined copy of a
    conversation that may be megabytes; only a block that straddles two pieces is assembled."""
    pieces: list[bytes | memoryview] = []
    for tag, part, end in _parts(top):
        pieces.append(tag)
        _unmarked(part, end, pieces)
        pieces.append(b"\n")
    sha = hashlib.sha256()
    hashes: list[str] = []
    size = 0
    filled = 0  # bytes of the current block already hashed
    for piece in pieces:
        view = memoryview(piece)
        size += len(view)
        at = 0
        while len(view) - at >= BLOCK - filled:
            sha.update(view[at : at + BLOCK - filled])
            at += BLOCK - filled
            filled = 0
            hashes.append(sha.copy().digest()[:12].hex())
        if at < len(view):
            sha.update(view[at:])
            filled += len(view) - at
    return hashes, size


def _unmarked(data: bytes, stop: int, out: list[bytes | memoryview]) -> None:
    """Append data[:stop] without its cache_control markers (and the comma that went with each)."""
    view = memoryview(data)
    at = data.find(MARKER_NAME, 0, stop)
    pos = 0
    while at >= 0:
        match = MARKER.match(data, at, stop)
        if match is None:
            at = data.find(MARKER_NAME, at + 1, stop)
            continue
        start, end = match.span()
        comma = data.rfind(b",", pos, start)
        if comma >= 0 and not data[comma + 1 : start].strip(SPACE):
            start = comma  # `,"cache_control":{..}`
        else:
            after = end
            while after < stop and data[after] in SPACE:
                after += 1
            if data[after : after + 1] == b"," and after < stop:
                end = after + 1  # `{"cache_control":{..},`: it was the first key
        out.append(view[pos:start])
        pos = end
        at = data.find(MARKER_NAME, end, stop)
    out.append(view[pos:stop] if pos or stop < len(data) else data)


def _parts(top: Mapping[str, msgspec.Raw]) -> Iterator[tuple[bytes, bytes, int]]:
    """(kind, bytes, where they end) of the system prompt, the tools and the messages. The
    messages' closing bracket is left out: the next turn has a comma there, and the prompt up to
    it is the same."""
    system = bytes(top.get("system", NULL))
    if BILLING_MARK in system:
        system = _without_billing_block(system)
    for kind, part in ((b"s", system), (b"t", bytes(top.get("tools", NULL)))):
        if part not in (b"null", b"[]", b'""'):
            yield kind, part, len(part)
    messages = bytes(top.get("messages", NULL))
    end = len(messages)
    while end and messages[end - 1] in SPACE:
        end -= 1
    if messages.startswith(b"[") and end and messages[end - 1] == ord("]"):
        yield b"m", messages, end - 1


def _without_billing_block(system: bytes) -> bytes:
    """The system prompt's bytes without the billing block; other blocks keep their bytes."""
    if system.startswith(b"["):
        blocks = msgspec.json.decode(system, type=list[msgspec.Raw])
        kept = [bytes(b) for b in blocks if not _is_billing_block(bytes(b))]
        return b"[" + b",".join(kept) + b"]"
    return msgspec.json.encode(without_billing_header(msgspec.json.decode(system)))


def _is_billing_block(block: bytes) -> bool:
    if BILLING_MARK not in block:
        return False
    decoded = msgspec.json.decode(block)
    return isinstance(decoded, dict) and str(decoded.get("text", "")).startswith(BILLING_HEADER)


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
