"""Which llama.cpp slot should take a request, from the prefix index (pure).

A slot's KV cache holds the last prompt it processed. Sending a request to the slot whose
prompt shares the longest prefix with it saves processing that prefix again; sending it to a
slot that holds another conversation throws that conversation's cache away. Each slot is
scored by the tokens it would reuse minus the tokens it would evict; an empty slot scores 0.
Ties go to the slot that evicts less, then to the one used longest ago. A slot with a request
in progress comes last: the request would wait for it.

With slot files (llama-server's `--slot-save-path`), a prefix worth keeping is saved before
its slot is given to another conversation, and a returning conversation whose saved prefix is
longer than what any slot holds for it has it restored first: eviction then costs a save, and
a prefix saved is as good as one held (less what is worth less than `min_tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from router.policy.prefix import BLOCK

NO_SLOT = -1  # a backend without slots (not llama.cpp): the backend itself is the cache
FILE_KEEP = 600.0  # seconds a slot file's conversation has to come back before its file may be reused


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
    every block this slot wrote since then is still in its cache. `file`, `file_tail`: the slot
    file its conversation was restored from and that file's tail then: saving the slot again
    overwrites that file while it still holds this conversation. For a slot file, `at` is when
    it was last written or restored (least recently used goes first)."""

    tail: str
    tokens: int
    at: float
    since: float = 0.0
    file: str = ""
    file_tail: str = ""


@dataclass(frozen=True, slots=True)
class SlotSaving:
    """A backend's slot files: how many it may keep, the smallest prefix worth one, and the tag
    in their names (a hash of the deployment, backend and model: files of another model, or of
    another deployment sharing the server, are never restored or overwritten)."""

    files: int
    min_tokens: int
    tag: str = "0"

    def names(self, backend: str) -> list[str]:
        return [slot_file_name(backend, self.tag, n) for n in range(self.files)]


@dataclass(frozen=True, slots=True)
class PrefixView:
    """The index as one request sees it: its block hashes and what is known of them."""

    hashes: tuple[str, ...] = ()
    entries: Sequence[Entry | None] = ()
    slots: Mapping[tuple[str, int], SlotState] = field(default_factory=dict)
    busy_slots: Mapping[tuple[str, int], int] = field(default_factory=dict)  # requests in progress
    files: Mapping[tuple[str, str], SlotState] = field(default_factory=dict)  # saved slots: (backend, name)
    now: float = 0.0  # when the view was read (a slot file's age)

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
    save: str = ""  # slot file to save what it holds to first (its prefix is worth keeping)
    restore: str = ""  # slot file to restore into it first (this prompt's longest saved prefix)
    restored: SlotState | None = None  # what that file holds
    # What moving the slot's conversation to a file costs: its tokens times the share of the
    # backend's files in use after the save. A file is not free: the files are few, and the
    # conversation's return costs a restore; so a pool spreads its conversations, and fills the
    # files of one server last.
    move_cost: int = 0

    @property
    def score(self) -> int:
        return self.reused - self.evicted - self.move_cost


def slot_choices(
    view: PrefixView, backend: str, slots: int | None, saving: SlotSaving | None = None
) -> list[SlotChoice]:
    """The backend's slots, best first; with `saving`, each with the saves and restores it needs."""
    ids = range(slots) if slots else (NO_SLOT,)
    position = {h: i for i, h in enumerate(view.hashes)}
    choices = [_choice(view, backend, slot, position) for slot in ids]
    if saving is not None and slots:
        choices = _with_files(view, backend, choices, position, saving)
    age = {c.slot: view.slots[(backend, c.slot)].at if (backend, c.slot) in view.slots else 0.0 for c in choices}
    return sorted(choices, key=lambda c: (c.busy, -c.score, c.evicted, age[c.slot], c.slot))


def slot_file_name(backend: str, tag: str, number: int) -> str:
    """The name of a backend's slot file `number` (llama-server takes plain file names only; the
    backend's name is there for a person reading the folder, the tag tells them apart)."""
    safe = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else "_" for ch in backend)[:40]
    return f"ccgate-{safe}-{tag}-{number}.bin"


def _with_files(
    view: PrefixView, backend: str, choices: list[SlotChoice], position: Mapping[str, int], saving: SlotSaving
) -> list[SlotChoice]:
    """Each slot's score once saving and restoring are counted: a prefix worth keeping that is
    saved first is not lost, and the longest saved prefix of this prompt can be put back."""
    names = saving.names(backend)
    mine = {name: view.files[(backend, name)] for name in names if (backend, name) in view.files}
    best: tuple[int, str, SlotState] | None = None  # (tokens, name, state) of the longest saved prefix
    for name, state in mine.items():
        if state.tail in position and (best is None or state.tokens > best[0]):
            best = (state.tokens, name, state)  # the file's whole prompt is a prefix of this one
    saved_tails = {state.tail for state in mine.values()}
    held_best = max((c.reused for c in choices if not c.busy), default=0)
    if best is not None and best[0] - held_best < saving.min_tokens:
        best = None  # a slot holds nearly as much: restoring would not pay
    taken = {best[1]} if best else set()
    out = []
    for choice in choices:
        save = ""
        evicted, cost = choice.evicted, 0
        held = choice.held
        if held is not None and evicted >= saving.min_tokens and not choice.busy:
            lost = 0  # tokens of the conversation whose file the save overwrites
            if held.tail not in saved_tails:
                save, lost = _file_to_save(view, backend, held, names, mine, taken)
            if save or held.tail in saved_tails:
                in_use = len(mine) + (1 if save and save not in mine else 0)
                evicted, cost = lost, evicted * min(in_use, saving.files) // saving.files
        restore, reused, restored = "", choice.reused, None
        if best is not None and best[0] - choice.reused >= saving.min_tokens and not choice.busy:
            restore, reused, restored = best[1], best[0], best[2]
        out.append(
            replace(
                choice,
                reused=reused,
                evicted=evicted,
                move_cost=cost,
                save=save,
                restore=restore,
                restored=restored,
            )
        )
    return out


def _file_to_save(
    view: PrefixView,
    backend: str,
    held: SlotState,
    names: list[str],
    mine: Mapping[str, SlotState],
    taken: set[str],
) -> tuple[str, int]:
    """Where a slot's prefix goes, and the tokens of the conversation that file held and loses:
    the file it came from if that file still holds its conversation, else a name not used yet,
    else one whose conversation is in a slot again, else the least recently used if older than
    FILE_KEEP, else none (never one this request restores)."""
    name = held.file
    if name in names and name not in taken and (name not in mine or mine[name].tail == held.file_tail):
        return name, 0
    free = [n for n in names if n not in mine and n not in taken]
    if free:
        return free[0], 0
    in_slots = {state.tail for (owner, _), state in view.slots.items() if owner == backend}
    used = sorted(
        (state.tail not in in_slots, state.at, n, state.tokens) for n, state in mine.items() if n not in taken
    )
    if not used:
        return "", 0
    elsewhere, at, name, tokens = used[0]
    if elsewhere and view.now - at < FILE_KEEP:
        # Every file holds a conversation not back yet, saved within FILE_KEEP: with more
        # conversations than slots and files, overwriting the oldest would only trade one lost
        # conversation for another (saving each, restoring none); the files keep theirs.
        return "", 0
    return name, tokens if elsewhere else 0


def _choice(view: PrefixView, backend: str, slot: int, position: Mapping[str, int]) -> SlotChoice:
    busy = view.busy_slots.get((backend, slot), 0) > 0
    state = view.slots.get((backend, slot))
    if state is None:
        return SlotChoice(backend, slot, 0, 0, busy)
    if state.tail in position:  # the slot's whole prompt is a prefix of this one: all of it is reused
        return SlotChoice(backend, slot, state.tokens, 0, busy, state)
    for i in range(len(view.entries) - 1, -1, -1):
        entry = view.entries[i]
        if entry is not None and (entry.backend, entry.slot) == (backend, slot) and entry.at >= state.since:
            return SlotChoice(backend, slot, entry.tokens, max(0, state.tokens - entry.tokens), busy, state)
    return SlotChoice(backend, slot, 0, state.tokens, busy, state)
