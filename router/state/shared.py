"""State replicas share: the prefix index, and requests in progress per backend and slot.

`LocalShared` keeps it in this process (the default: `ccgate serve` needs no services);
`RedisShared` (state/redis_shared.py) puts it in Redis for every replica and falls back to its
local twin while Redis is away.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any

from router.policy.affinity import Entry, PrefixView, SlotState
from router.policy.prefix import BLOCK

INDEX_TTL = 3600.0  # seconds an index entry lives unused: KV caches rarely outlive it
INDEX_CAP = 200_000  # entries kept in memory (~40 per Claude Code prompt)


@dataclass(frozen=True, slots=True)
class SharedView:
    prefix: PrefixView
    others: dict[str, int] = field(default_factory=dict)  # other replicas' requests in progress, per backend
    script_result: Any = None  # what the script asked for with the view returned, if it ran


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """A Lua script Redis knows (by its SHA-1), with its keys and arguments."""

    sha: str
    keys: list[str]
    args: list[Any]


class LocalShared:
    """One process: the index in memory (LRU with TTL), in-flight counts of this replica only."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._slots: dict[tuple[str, int], SlotState] = {}
        self._files: dict[tuple[str, str], SlotState] = {}  # llama-server slot files: (backend, name)
        self._busy: dict[tuple[str, int], int] = {}
        self.changed: Callable[[], None] = lambda: None  # called when in-flight counts change
        self.others: dict[str, int] = {}  # other replicas' requests in progress, as last read
        self.breakers: dict[str, float] = {}  # backend → until when another replica's breaker is open
        self._held: dict[tuple[str, str], int] = {}  # (team key, backend) → our requests in progress
        self.held_elsewhere: dict[tuple[str, str], int] = {}  # the same, other replicas', as last read

    async def start(self) -> None:
        return None

    def publish_policy(self, summary: bytes) -> None:
        """Say what policy this replica runs (state/published_policy.py): nobody to tell in memory."""
        return None

    async def stop(self) -> None:
        return None

    async def view(self, hashes: Sequence[str], script: ScriptCall | None = None) -> SharedView:
        """What is known of these block hashes and the backends' load. `script`: a Redis script
        to run in the same round trip (admission); its result is `SharedView.script_result`,
        None when it did not run (no Redis, Redis away)."""
        return SharedView(self.local_view(hashes))

    def local_view(self, hashes: Sequence[str]) -> PrefixView:
        now = self._clock()
        entries: list[Entry | None] = []
        for h in hashes:
            entry = self._entries.get(h)
            if entry is not None and now - entry.at > INDEX_TTL:
                del self._entries[h]
                entry = None
            entries.append(entry)
        files = dict(self._files)
        return PrefixView(tuple(hashes), tuple(entries), dict(self._slots), dict(self._busy), files, now)

    def remember(
        self,
        hashes: Sequence[str],
        backend: str,
        slot: int,
        tokens: int,
        total_bytes: int,
        previous: SlotState | None = None,
    ) -> tuple[list[tuple[str, Entry]], SlotState | None]:
        """A backend processed this prompt on this slot: record who holds each of its blocks.

        `previous`: what the slot held before, as the routing decision saw it. When this prompt
        only extends it, the blocks it already had are still right and only the new ones are
        written. Returns what was written (for a shared store to write too)."""
        if not hashes:
            return [], None
        now = self._clock()
        start, since = extension(hashes, previous, now)
        written = entries_of(hashes, backend, slot, tokens, total_bytes, now, start)
        for entry_hash, entry in written:
            self._entries[entry_hash] = entry
            self._entries.move_to_end(entry_hash)
        while len(self._entries) > INDEX_CAP:
            self._entries.popitem(last=False)
        file = previous.file if previous is not None and previous.tail in hashes else ""
        file_tail = previous.file_tail if file and previous is not None else ""
        state = self._slots[(backend, slot)] = SlotState(hashes[-1], tokens, now, since, file, file_tail)
        return written, state

    def slot_saved(self, backend: str, name: str, held: SlotState) -> SlotState:
        """A slot's prefix (`held`) went to a slot file: the file holds it now."""
        state = self._files[(backend, name)] = SlotState(held.tail, held.tokens, self._clock(), held.since)
        return state

    def slot_restored(self, backend: str, slot: int, name: str, saved: SlotState) -> SlotState:
        """A slot file went into a slot: the slot holds its prefix now, the file was just used.
        Returns the slot's state as `previous` for the `remember` that follows, with `since` 0:
        that prompt writes all its blocks again, so they name the slot they are on now."""
        now = self._clock()
        self._files[(backend, name)] = replace(saved, at=now)
        state = self._slots[(backend, slot)] = SlotState(saved.tail, saved.tokens, now, now, name, saved.tail)
        return replace(state, since=0.0)

    def slots_emptied(self, backend: str, slots: int | None) -> None:
        """A backend restarted: its slots hold nothing now (its slot files still hold theirs)."""
        for key in [k for k in self._slots if k[0] == backend]:
            del self._slots[key]

    def slot_file_lost(self, backend: str, name: str) -> None:
        """A slot file that failed (a restore, or a save that may have written part of it): it is
        not offered again, and its name is free."""
        self._files.pop((backend, name), None)

    def breaker(self, backend: str, cooldown: float | None) -> None:
        """This replica's breaker for `backend` opened (for `cooldown` seconds) or closed (None)."""
        return None

    def begin(self, backend: str, slot: int) -> Callable[[], None]:
        key = (backend, slot)
        self._busy[key] = self._busy.get(key, 0) + 1
        self.changed()
        done = False

        def end() -> None:
            nonlocal done
            if not done:
                done = True
                self._busy[key] -= 1
                if not self._busy[key]:
                    del self._busy[key]
                self.changed()

        return end

    def busy_counts(self) -> dict[tuple[str, int], int]:
        return dict(self._busy)

    def hold(self, key: str, backend: str) -> Callable[[], None]:
        """Count a team key's request in progress on a backend (its share of the local box)."""
        field = (key, backend)
        self._held[field] = self._held.get(field, 0) + 1
        self.changed()
        done = False

        def end() -> None:
            nonlocal done
            if not done:
                done = True
                self._held[field] -= 1
                if not self._held[field]:
                    del self._held[field]
                self.changed()

        return end

    def held(self, key: str, backends: Collection[str]) -> int:
        """A key's requests in progress on these backends, every replica's."""
        mine = sum(n for (k, b), n in self._held.items() if k == key and b in backends)
        return mine + sum(n for (k, b), n in self.held_elsewhere.items() if k == key and b in backends)

    def held_counts(self) -> dict[tuple[str, str], int]:
        return dict(self._held)


def extension(hashes: Sequence[str], previous: SlotState | None, now: float) -> tuple[int, float]:
    """(first block to write, when the slot's conversation began). A prompt that extends what the
    slot held writes only its new blocks, unless the old ones are halfway to expiring."""
    if previous is not None and now - previous.since < INDEX_TTL / 2:
        with suppress(ValueError):
            return hashes.index(previous.tail) + 1, previous.since
    return 0, now


def entries_of(
    hashes: Sequence[str], backend: str, slot: int, tokens: int, total_bytes: int, at: float, start: int = 0
) -> list[tuple[str, Entry]]:
    """Each block's entry from `start` on, its token count prorated from the prompt's total by position."""
    out = []
    for i in range(start, len(hashes)):
        share = min(1.0, (i + 1) * BLOCK / total_bytes) if total_bytes else 1.0
        out.append((hashes[i], Entry(backend, slot, round(tokens * share), at)))
    return out
