"""A conversation moving between a local model and the Anthropic API (pure).

Claude Code sends the whole conversation every turn, so a cloud turn carries what the local
model wrote, and the API holds that history to two rules: every `thinking` block must carry a
signature the API itself issued, unmodified; and with thinking on, the last assistant turn of a
tool loop must start with a thinking block. A local model's thinking has no such signature, and
a local turn without reasoning has no thinking block at all.

So what ccgate relays from a non-Anthropic backend is marked (`Marks`): each thinking block gets
a signature of ccgate's own, and each tool call an id of ccgate's own, both HMACs under a
per-install secret. On the way to the Anthropic API (`for_anthropic`), thinking blocks the API
did not issue are dropped (those it did issue pass byte for byte: the body is spliced, never
re-serialised around them); when the last turn of the current tool loop is one of ours and is
left without a thinking block while the request enables thinking, the request goes without
`thinking`, the API's documented way out. Nothing else changes, except tool ids the API would
refuse (`^[a-zA-Z0-9_-]+$`), rewritten the same way wherever they appear.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import msgspec

MARK = "ccgate:"  # signature prefix of thinking blocks ccgate relayed from a local model
OUR_TOOL_ID = "toolu_ccg"
THINKING_TYPES = ("thinking", "redacted_thinking")
VALID_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_Raw = msgspec.Raw


class Marks:
    """Signs what ccgate relays from local backends, and recognises it later."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @property
    def secret(self) -> bytes:
        return self._secret

    def use(self, secret: bytes) -> None:
        """The replicas' shared secret, once known (at start-up)."""
        self._secret = secret

    def _mac(self, data: bytes, size: int) -> str:
        return hmac.new(self._secret, data, hashlib.sha256).hexdigest()[:size]

    def signature(self, thinking: str) -> str:
        return MARK + self._mac(thinking.encode(), 40)

    def is_ours(self, signature: str, thinking: str) -> bool:
        return signature.startswith(MARK) and hmac.compare_digest(signature, self.signature(thinking))

    def tool_id(self) -> str:
        nonce = secrets.token_hex(8)
        return f"{OUR_TOOL_ID}{nonce}{self._mac(nonce.encode(), 16)}"

    def is_our_tool_id(self, value: str) -> bool:
        if not value.startswith(OUR_TOOL_ID) or len(value) != len(OUR_TOOL_ID) + 32:
            return False
        nonce = value[len(OUR_TOOL_ID) : len(OUR_TOOL_ID) + 16]
        return hmac.compare_digest(value[len(OUR_TOOL_ID) + 16 :], self._mac(nonce.encode(), 16))


@dataclass(slots=True)
class Handoff:
    """What `for_anthropic` changed, to say so (x-ccgate-handoff, a span attribute, a metric)."""

    body: bytes
    dropped: int = 0  # thinking blocks the API did not issue
    thinking_off: bool = False  # the request goes without `thinking`
    renamed_ids: int = 0  # tool ids the API would refuse, rewritten
    empty_turns: int = 0  # assistant turns that held nothing but such thinking, left out
    raw: dict[str, Any] = field(default_factory=dict)  # the new body, decoded

    @property
    def actions(self) -> list[str]:
        return [
            a
            for a, done in (
                ("dropped_thinking", self.dropped),
                ("thinking_off", self.thinking_off),
                ("renamed_ids", self.renamed_ids),
            )
            if done
        ]

    def describe(self) -> str:
        said = []
        if self.dropped:
            said.append(f"dropped {_count(self.dropped, 'thinking block')} not issued by the API")
        if self.thinking_off:
            said.append("thinking off: the tool loop's last turn has no thinking (a local model's, or begun elsewhere)")
        if self.renamed_ids:
            said.append(f"renamed {_count(self.renamed_ids, 'tool id')} the API would refuse")
        return "; ".join(said)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'s' if n != 1 else ''}"


def safe_tool_id(value: str) -> str:
    """A tool id the Anthropic API accepts; the same for the same input, wherever it appears."""
    if VALID_ID.match(value):
        return value
    cleaned = re.sub(r"[^a-zA-Z0-9_-]", "_", value)[:40]
    return f"{cleaned}_{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def thinking_on(raw: dict[str, Any]) -> bool:
    thinking = raw.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def for_anthropic(body: bytes, raw: dict[str, Any], marks: Marks) -> Handoff | None:
    """The body the Anthropic API can take, or None when it already can (then it goes untouched)."""
    messages = raw.get("messages")
    if not isinstance(messages, list):
        return None
    drops: dict[int, set[int]] = {}
    renames: dict[int, dict[int, str]] = {}
    ours: set[int] = set()  # assistant turns a local model wrote (its marks are on them)
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "thinking" and message.get("role") == "assistant":
                signature = block.get("signature")
                if not isinstance(signature, str) or not signature or signature.startswith(MARK):
                    drops.setdefault(i, set()).add(j)
                    ours.add(i)
            elif kind == "tool_use":
                tool_id = block.get("id")
                if isinstance(tool_id, str):
                    if marks.is_our_tool_id(tool_id):
                        ours.add(i)
                    elif not VALID_ID.match(tool_id):
                        renames.setdefault(i, {})[j] = "id"
            elif kind == "tool_result":
                tool_id = block.get("tool_use_id")
                if isinstance(tool_id, str) and not VALID_ID.match(tool_id):
                    renames.setdefault(i, {})[j] = "tool_use_id"
    enabled = (raw.get("thinking") or {}).get("type") == "enabled"
    off = _thinking_must_go(messages, drops, ours, enabled) if thinking_on(raw) else False
    if not drops and not renames and not off:
        return None
    return _rewrite(body, messages, drops, renames, off)


def _thinking_must_go(messages: list[Any], drops: dict[int, set[int]], ours: set[int], enabled: bool) -> bool:
    """In a tool loop (the last message carries tool results) whose first assistant message, the
    one after the last real user prompt, does not start with a thinking block (left): the API
    thinks once per turn, so the later steps of its own loop carry none, but the first must. With
    thinking `enabled` the API refuses that history whoever wrote the message (a local model, or
    a session begun straight against llama-server and then pointed at ccgate); with `adaptive`,
    whose turns the API itself may write without thinking, only a message ccgate relayed from a
    local model counts."""
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "user" or not _results_only(last):
        return False
    first = None  # the tool loop's first assistant message
    for i in range(len(messages) - 1, -1, -1):
        if _role(messages[i]) == "assistant":
            first = i
        elif not _results_only(messages[i]):
            break
    if first is None or not (enabled or first in ours):
        return False
    content = messages[first].get("content")
    if not isinstance(content, list):
        return True  # plain text: no thinking block at all
    left = [b for j, b in enumerate(content) if j not in drops.get(first, ()) and isinstance(b, dict)]
    return not (left and left[0].get("type") in THINKING_TYPES)


def _results_only(message: Any) -> bool:
    """A user message of tool results and nothing else: part of the tool loop, not a new prompt."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list) or not content:
        return False
    return all(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else None


def _rewrite(
    body: bytes, messages: list[Any], drops: dict[int, set[int]], renames: dict[int, dict[int, str]], off: bool
) -> Handoff:
    """Splice the body: what is not changed keeps its bytes (msgspec.Raw), the API's blocks too."""
    top = msgspec.json.decode(body, type=dict[str, _Raw])
    raws = msgspec.json.decode(top["messages"], type=list[_Raw])
    handoff = Handoff(b"", dropped=sum(len(d) for d in drops.values()), thinking_off=off)
    keep: list[_Raw] = []
    for i, raw_message in enumerate(raws):
        if i not in drops and i not in renames:
            keep.append(raw_message)
            continue
        fields = msgspec.json.decode(raw_message, type=dict[str, _Raw])
        blocks = msgspec.json.decode(fields["content"], type=list[_Raw])
        changed: list[_Raw] = []
        for j, block in enumerate(blocks):
            if j in drops.get(i, ()):
                continue
            key = renames.get(i, {}).get(j)
            if key is not None:
                decoded = msgspec.json.decode(block)
                decoded[key] = safe_tool_id(decoded[key])
                block = _Raw(msgspec.json.encode(decoded))
                handoff.renamed_ids += 1
            changed.append(block)
        if not changed and _role(messages[i]) == "assistant":
            handoff.empty_turns += 1  # it held only thinking the API cannot take: nothing left to say
            continue
        fields["content"] = _Raw(msgspec.json.encode(changed))
        keep.append(_Raw(msgspec.json.encode(fields)))
    top["messages"] = _Raw(msgspec.json.encode(keep))
    if off:
        top.pop("thinking", None)
    handoff.body = msgspec.json.encode(top)
    handoff.raw = msgspec.json.decode(handoff.body)
    return handoff
