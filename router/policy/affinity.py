"""Which llama.cpp slot should take a request, from the prefix index (pure).

A slot's KV cache holds the last prompt it processed. Sending a request to the slot whose
prompt shares the longest prefix with it saves processing that prefix again; sending it to a
slot that holds another conversation throws that conversation's cache away. Each slot is
scored by the tokens it would reuse minus the tokens it would evict; an empty slot scores 0.
Ties go to the slot that evicts less, then to the one used longest ago. A slot with a request
in progress comes last: the request would wait for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from router.policy.prefix import BLOCK

NO_SLOT = -1  # a backend without slots (not llama.cpp): the backend itself is the cache


@dataclass(frozen=True, slots=True)
class Entry:
    """Who last processed the prompt up to the end of one block, and its token count there."""

    backend: str
    slot: int
    tokens: int
    at: float


@dataclass(frozen=True, slots=True)
class SlotState:
    """What a slot holds: the last whole block of its last prompt, and that prompt's tokens.

    `since`: when its current conversation began there; later prompts only extended it, so
    every block this slot wrote since then is still in its cache."""

    tail: str
    tokens: int
    at: float
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class PrefixView:
    """The index as one request sees it: its block hashes and what is known of them."""

    hashes: tuple[str, ...] = ()
    entries: Sequence[Entry | None] = ()
    slots: Mapping[tuple[str, int], SlotState] = field(default_factory=dict)
    busy_slots: Mapping[tuple[str, int], int] = field(default_factory=dict)  # requests in progress

    def longest(self) -> tuple[int, Entry] | None:
        """The deepest block someone processed (its index and entry)."""
        for i in range(len(self.entries) - 1, -1, -1):
            entry = self.entries[i]
            if entry is not None:
                return i, entry
        return None


def known_prompt_tokens(view: PrefixView, total_bytes: int, bytes_per_token: float) -> int | None:
    """The prompt's tokens: the longest known prefix at its measured count, the rest estimated."""
    found = view.longest()
    if found is None:
        return None
    index, entry = found
    rest = max(0, total_bytes - (index + 1) * BLOCK)
    return entry.tokens + round(rest / bytes_per_token)


@dataclass(frozen=True, slots=True)
class SlotChoice:
    backend: str
    slot: int
    reused: int  # tokens of this prompt the slot already holds
    evicted: int  # tokens of another conversation it would lose
    busy: bool
    held: SlotState | None = None  # what the slot holds now

    @property
    def score(self) -> int:
        return self.reused - self.evicted


def slot_choices(view: PrefixView, backend: str, slots: int | None) -> list[SlotChoice]:
    """The backend's slots, best first."""
    ids = range(slots) if slots else (NO_SLOT,)
    position = {h: i for i, h in enumerate(view.hashes)}
    choices = [_choice(view, backend, slot, position) for slot in ids]
    age = {c.slot: view.slots[(backend, c.slot)].at if (backend, c.slot) in view.slots else 0.0 for c in choices}
    return sorted(choices, key=lambda c: (c.busy, -c.score, c.evicted, age[c.slot], c.slot))


def _choice(view: PrefixView, backend: str, slot: int, position: Mapping[str, int]) -> SlotChoice:
    busy = view.busy_slots.get((backend, slot), 0) > 0
    state = view.slots.get((backend, slot))
    if state is None:
        return SlotChoice(backend, slot, 0, 0, busy)
    at = position.get(state.tail)
    if at is not None:  # the slot's whole prompt is a prefix of this one
        entry = view.entries[at] if at < len(view.entries) else None
        return SlotChoice(backend, slot, entry.tokens if entry else state.tokens, 0, busy, state)
    for i in range(len(view.entries) - 1, -1, -1):
        entry = view.entries[i]
        if entry is not None and (entry.backend, entry.slot) == (backend, slot) and entry.at >= state.since:
            return SlotChoice(backend, slot, entry.tokens, max(0, state.tokens - entry.tokens), busy, state)
    return SlotChoice(backend, slot, 0, state.tokens, busy, state)
