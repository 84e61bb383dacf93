"""Shared state in Redis, so every replica routes with the same prefix index and load.

Keys (prefix `ccgate:` by default):
- `px:<block hash>` → "backend\\tslot\\ttokens\\tat", with a TTL: who last processed the prompt
  up to that block;
- `slots` (hash) "backend\\tslot" → "tail\\ttokens\\tat\\tsince[\\tfile\\tfile tail]": what each
  llama.cpp slot holds (and the slot file its conversation was restored from);
- `files` (hash) "backend\\tname" → "tail\\ttokens\\tat\\tsince": what each slot file holds
  (llama-server's `--slot-save-path`; a bounded set of names per backend);
- `inflight` (hash) "replica\\tbackend\\tslot" → requests that replica has in progress there;
- `alive` (hash) replica → the time its heartbeat runs out;
- `breakers` (hash) backend → until when a replica's breaker for it is open;
- `held` (hash) "replica\tkey\tbackend" → a team key's requests in progress there (its share).

In-flight counts are per-replica hash fields under a heartbeat rather than shared INCR/DECR
counters or per-request leases: a replica writes its own whole counts (idempotent, so a lost
write heals at the next one), a replica that dies simply stops renewing `alive` and its fields
stop counting after HEARTBEAT_TTL, and reading every replica's load is one HGETALL. A routing
decision costs one round trip: a pipeline of MGET (the request's block hashes) and four HGETALLs.

When Redis fails, the replica logs it once, counts it (`ccgate_state_redis_errors_total`), and
routes on its local twin (the same index, kept in this process) until a heartbeat finds Redis
again; it then rewrites its in-flight counts and the index entries it learnt meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from redis.exceptions import NoScriptError

from router.policy.affinity import Entry, PrefixView, SlotState
from router.state.published_policy import KEY as POLICY_KEY
from router.state.redis_client import CLUSTER_REFUSED, connect, describe, is_cluster, reason
from router.state.redis_failures import REDIS_FAILURES
from router.state.shared import INDEX_TTL, LocalShared, ScriptCall, SharedView

log = logging.getLogger("ccgate.state")

# KEYS: the six state hashes (VIEW_HASHES), then the request's block keys. Returns the blocks'
# entries (nil where unknown), then each hash as a flat field/value list: one command, one answer
# to parse, where a pipeline of six cost six (redis-py's per-command work is most of a decision's).
VIEW = """
local out = {{}}
if #KEYS > 6 then out[1] = redis.call('MGET', unpack(KEYS, 7)) end
for i = 1, 6 do out[i + 1] = redis.call('HGETALL', KEYS[i]) end
return out
"""
VIEW_SHA = hashlib.sha1(VIEW.encode()).hexdigest()
VIEW_HASHES = ("slots", "breakers", "inflight", "alive", "held", "files")
IndexWrite = tuple[list[tuple[str, Entry]], str, int, SlotState]  # entries, backend, slot, its state

HEARTBEAT = 1.0  # seconds between heartbeats (and reconnection attempts)
HEARTBEAT_TTL = 5.0  # a replica silent this long no longer counts
REPLAY_CAP = 2_000  # index writes kept while Redis is away, replayed when it returns


class RedisShared(LocalShared):
    def __init__(
        self,
        url: str,
        prefix: str = "ccgate:",
        on_error: Callable[[], None] = lambda: None,
        on_state: Callable[[bool], None] = lambda up: None,
        on_round_trip: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        self.client = connect(
            url,
            on_round_trip,
            # Under load a whole answer can wait its turn on the event loop: 0.5 s of that read
            # as "Redis is down". A dead Redis refuses at once; a hung one costs 2 s, once.
            socket_timeout=2.0,
            socket_connect_timeout=0.5,
            health_check_interval=0,
            decode_responses=True,
        )
        self.where = describe(url)
        self.prefix = prefix
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.up = True
        self._on_error = on_error
        self._on_state = on_state
        self._dirty = asyncio.Event()
        self._replay: list[IndexWrite] = []
        self._index_writes: list[IndexWrite] = []  # waiting for the writer
        self._index_writer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._policy: bytes | None = None  # what this replica runs, as published (state/published_policy.py)
        self._written: set[str] = set()  # this replica's inflight fields in Redis
        self._written_held: set[str] = set()  # and its held fields
        self._said_cluster = False
        self.changed = self._dirty.set

    async def start(self) -> None:
        try:
            await self.client.ping()
        except REDIS_FAILURES as exc:
            self._failed(exc)
        self._tasks += [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._publisher())]

    async def stop(self) -> None:
        if self._index_writer is not None:  # what was learnt last is worth keeping
            await asyncio.gather(self._index_writer, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        if self.up:  # leave no counts behind
            with suppress(*REDIS_FAILURES):
                pipe = self.client.pipeline(transaction=False)
                if self._written:
                    pipe.hdel(self._key("inflight"), *self._written)
                if self._written_held:
                    pipe.hdel(self._key("held"), *self._written_held)
                pipe.hdel(self._key("alive"), self.replica)
                await pipe.execute()
        with suppress(*REDIS_FAILURES):
            await self.client.aclose()

    async def view(self, hashes: Sequence[str], script: ScriptCall | None = None) -> SharedView:
        if not self.up:
            return SharedView(self.local_view(hashes))
        try:
            scripted, viewed = await self._read(hashes, script)
        except REDIS_FAILURES as exc:
            self._failed(exc)
            return SharedView(self.local_view(hashes))
        raw_entries = viewed[0]
        slots_raw, breakers_raw, inflight_raw, alive_raw, held_raw, files_raw = (_pairs(v) for v in viewed[1:7])
        self._held_elsewhere(held_raw, alive_raw)
        self.breakers = _open_breakers(breakers_raw)
        entries = _Entries(raw_entries)
        slots = {}
        for field, value in slots_raw.items():
            key, state = _slot_key(field), _slot(value)
            if key is not None and state is not None:
                slots[key] = state
        files = {}
        for field, value in files_raw.items():
            backend, _, name = field.partition("\t")
            state = _slot(value)
            if name and state is not None:
                files[(backend, name)] = state
        busy = self.busy_counts()
        others, elsewhere = self._other_replicas(inflight_raw, alive_raw)
        for key, count in elsewhere.items():
            busy[key] = busy.get(key, 0) + count
        view = PrefixView(tuple(hashes), entries, slots, busy, files, time.time())
        return SharedView(view, others, scripted)

    async def _read(self, hashes: Sequence[str], script: ScriptCall | None) -> tuple[Any, list[Any]]:
        """One round trip: the caller's script (admission) and VIEW. A script Redis has forgotten
        (it restarted) is loaded and VIEW read again; the caller's comes back None and runs alone."""
        keys = [self._key(name) for name in VIEW_HASHES] + [self._key("px:" + h) for h in hashes]
        pipe = self.client.pipeline(transaction=False)
        if script is not None:  # by SHA: a pipeline holding Script objects asks SCRIPT EXISTS first
            pipe.evalsha(script.sha, len(script.keys), *script.keys, *script.args)
        pipe.evalsha(VIEW_SHA, len(keys), *keys)
        results = await pipe.execute(raise_on_error=False)
        scripted = results[0] if script is not None and not isinstance(results[0], Exception) else None
        viewed = results[-1]
        if isinstance(viewed, NoScriptError):
            await self.client.script_load(VIEW)
            viewed = await self.client.evalsha(VIEW_SHA, len(keys), *keys)
        elif isinstance(viewed, Exception):
            raise viewed
        return scripted, viewed

    def _other_replicas(
        self, inflight: dict[str, str], alive: dict[str, str]
    ) -> tuple[dict[str, int], dict[tuple[str, int], int]]:
        """Live replicas' requests in progress, per backend and per slot (this replica left out)."""
        now = time.time()
        live = {replica for replica, until in alive.items() if _float(until) > now}
        per_backend: dict[str, int] = {}
        per_slot: dict[tuple[str, int], int] = {}
        for field, value in inflight.items():
            parts = field.split("\t")
            if len(parts) != 3 or parts[0] == self.replica or parts[0] not in live:
                continue
            count = int(_float(value))
            backend, slot = parts[1], int(_float(parts[2]))
            per_backend[backend] = per_backend.get(backend, 0) + count
            per_slot[(backend, slot)] = per_slot.get((backend, slot), 0) + count
        self.others = per_backend
        return per_backend, per_slot

    def _held_elsewhere(self, held: dict[str, str], alive: dict[str, str]) -> None:
        now = time.time()
        live = {replica for replica, until in alive.items() if _float(until) > now}
        counts: dict[tuple[str, str], int] = {}
        for field, value in held.items():
            parts = field.split("\t")
            if len(parts) == 3 and parts[0] != self.replica and parts[0] in live:
                counts[(parts[1], parts[2])] = counts.get((parts[1], parts[2]), 0) + int(_float(value))
        self.held_elsewhere = counts

    def remember(
        self,
        hashes: Sequence[str],
        backend: str,
        slot: int,
        tokens: int,
        total_bytes: int,
        previous: SlotState | None = None,
    ) -> tuple[list[tuple[str, Entry]], SlotState | None]:
        written, state = super().remember(hashes, backend, slot, tokens, total_bytes, previous)
        if state is None:
            return written, state
        write = (written, backend, slot, state)
        if not self.up:
            if len(self._replay) < REPLAY_CAP:
                self._replay.append(write)
            return written, state
        # Queued for one writer: under load the answers finishing meanwhile share a round trip.
        self._index_writes.append(write)
        if self._index_writer is None or self._index_writer.done():
            self._index_writer = asyncio.get_running_loop().create_task(self._write_index())
        return written, state

    async def _write_index(self) -> None:
        while self._index_writes:
            batch, self._index_writes = self._index_writes, []
            await self._write(batch)

    async def _write(self, batch: list[IndexWrite]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for written, backend, slot, state in batch:
                for h, entry in written:
                    value = f"{entry.backend}\t{entry.slot}\t{entry.tokens}\t{entry.at}"
                    pipe.set(self._key("px:" + h), value, ex=int(INDEX_TTL))
                slot_value = _slot_value(state)
                pipe.hset(self._key("slots"), f"{backend}\t{slot}", slot_value)
            await pipe.execute()
        except REDIS_FAILURES as exc:
            self._failed(exc)
            self._replay.extend(batch[: max(0, REPLAY_CAP - len(self._replay))])

    def slot_saved(self, backend: str, name: str, held: SlotState) -> SlotState:
        state = super().slot_saved(backend, name, held)
        self._write_soon({self._key("files"): {f"{backend}\t{name}": _slot_value(state)}})
        return state

    def slot_restored(self, backend: str, slot: int, name: str, saved: SlotState) -> SlotState:
        previous = super().slot_restored(backend, slot, name, saved)
        fields = {
            self._key("files"): {f"{backend}\t{name}": _slot_value(self._files[(backend, name)])},
            self._key("slots"): {f"{backend}\t{slot}": _slot_value(self._slots[(backend, slot)])},
        }
        self._write_soon(fields)
        return previous

    def slots_emptied(self, backend: str, slots: int | None) -> None:
        known = {slot for owner, slot in self._slots if owner == backend}
        super().slots_emptied(backend, slots)
        fields = {f"{backend}\t{slot}" for slot in known | set(range(slots or 0))}
        if fields:
            self._write_soon({}, (self._key("slots"), *sorted(fields)))

    def slot_file_lost(self, backend: str, name: str) -> None:
        super().slot_file_lost(backend, name)
        self._write_soon({}, (self._key("files"), f"{backend}\t{name}"))

    def publish_policy(self, summary: bytes) -> None:
        self._policy = summary
        self._policy_soon()

    def _policy_soon(self) -> None:
        """Written at start-up, on each reload, and again when Redis comes back."""
        summary = self._policy
        if summary is None or not self.up:
            return

        async def write() -> None:
            try:
                await self.client.set(self._key(POLICY_KEY), summary)
            except REDIS_FAILURES as exc:
                self._failed(exc)

        task = asyncio.get_running_loop().create_task(write())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def _write_soon(self, hashes: dict[str, dict[str, str]], gone: tuple[str, ...] | None = None) -> None:
        """Fields written (and `gone`: a key and fields deleted) in the background; lost if Redis
        is away (a breaker is rewritten as it changes, a slot file nobody knows of is only a name
        to reuse, and a slot's state is written again when its answer ends)."""
        if not self.up:
            return

        async def write() -> None:
            try:
                pipe = self.client.pipeline(transaction=False)
                for key, mapping in hashes.items():
                    pipe.hset(key, mapping=mapping)
                if gone is not None:
                    pipe.hdel(*gone)
                await pipe.execute()
            except REDIS_FAILURES as exc:
                self._failed(exc)

        task = asyncio.get_running_loop().create_task(write())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def breaker(self, backend: str, cooldown: float | None) -> None:
        key = self._key("breakers")
        if cooldown is None:
            self._write_soon({}, (key, backend))
        else:
            self._write_soon({key: {backend: str(time.time() + cooldown)}})

    async def _publisher(self) -> None:
        """Write this replica's in-flight counts whenever they change (coalesced)."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self.up:
                await self._publish()

    async def _publish(self) -> None:
        counts = {f"{self.replica}\t{b}\t{s}": n for (b, s), n in self.busy_counts().items()}
        gone = self._written - set(counts)
        held = {f"{self.replica}\t{k}\t{b}": n for (k, b), n in self.held_counts().items()}
        gone_held = self._written_held - set(held)
        try:
            pipe = self.client.pipeline(transaction=False)
            if counts:
                pipe.hset(self._key("inflight"), mapping=counts)
            if gone:
                pipe.hdel(self._key("inflight"), *gone)
            if held:
                pipe.hset(self._key("held"), mapping=held)
            if gone_held:
                pipe.hdel(self._key("held"), *gone_held)
            pipe.hset(self._key("alive"), self.replica, str(time.time() + HEARTBEAT_TTL))
            await pipe.execute()
            self._written = set(counts)
            self._written_held = set(held)
        except REDIS_FAILURES as exc:
            self._failed(exc)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self._beat()
            except Exception:  # a bug here must not end the heartbeat: other replicas sweep us
                log.exception("shared state: heartbeat failed; trying again in %ss", HEARTBEAT)

    async def _beat(self) -> None:
        if not self.up:
            try:
                # Connections from before the outage point at a dead server: start afresh.
                await self.client.connection_pool.disconnect()
                await self.client.ping()
            except REDIS_FAILURES:
                return
            await self._back()
        await self._publish()
        await self._sweep()

    async def _back(self) -> None:
        if await is_cluster(self.client):  # unreachable at start-up, so not refused then
            if not self._said_cluster:
                log.error("redis at %s: %s", self.where, CLUSTER_REFUSED)
                self._said_cluster = True
            return
        self.up = True
        self._on_state(True)
        self._policy_soon()
        replay, self._replay = self._replay, []
        log.warning("redis is back: sharing state again (%d index writes replayed)", len(replay))
        for start in range(0, len(replay), 100):
            await self._write(replay[start : start + 100])

    async def _sweep(self) -> None:
        """Read the other replicas' load (for /metrics and readiness between requests) and drop
        the fields of replicas whose heartbeat ran out: they died without cleaning up."""
        if not self.up:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self._key("inflight"))
            pipe.hgetall(self._key("alive"))
            pipe.hgetall(self._key("breakers"))
            pipe.hgetall(self._key("held"))
            inflight, alive, breakers, held = await pipe.execute()
            self._other_replicas(inflight, alive)
            self._held_elsewhere(held, alive)
            self.breakers = _open_breakers(breakers)
            now = time.time()
            dead = {r for r, until in alive.items() if _float(until) < now - HEARTBEAT_TTL}
            if not dead:
                return
            stale = [f for f in inflight if f.split("\t", 1)[0] in dead]
            stale_held = [f for f in held if f.split("\t", 1)[0] in dead]
            pipe = self.client.pipeline(transaction=False)
            if stale:
                pipe.hdel(self._key("inflight"), *stale)
            if stale_held:
                pipe.hdel(self._key("held"), *stale_held)
            pipe.hdel(self._key("alive"), *dead)
            await pipe.execute()
        except REDIS_FAILURES as exc:
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        self._on_error()
        self.others = {}  # unknown now: count only what llama-server reports
        self.breakers = {}
        if self.up:
            self.up = False
            self._on_state(False)
            log.warning(
                "redis at %s unavailable (%s): routing on this replica's own state until it returns",
                self.where,
                reason(exc),  # what to fix: refused, a certificate, a password, no master
            )

    def _key(self, name: str) -> str:
        return self.prefix + name


def _open_breakers(raw: dict[str, str]) -> dict[str, float]:
    now = time.time()
    return {backend: until for backend, value in raw.items() if (until := _float(value)) > now}


class _Entries(Sequence[Entry | None]):
    """Index entries as Redis sent them, each parsed when first read: a decision reads the
    deepest known one or two, not all ~40 of a Claude Code prompt."""

    __slots__ = ("_parsed", "_raw")

    def __init__(self, raw: list[str | None]) -> None:
        self._raw = raw
        self._parsed: dict[int, Entry | None] = {}

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, index: int) -> Entry | None:  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]  # type: ignore[return-value]
        if index < 0:
            index += len(self._raw)
        if index not in self._parsed:
            self._parsed[index] = _entry(self._raw[index])
        return self._parsed[index]


def _entry(value: str | None) -> Entry | None:
    if not value:
        return None
    parts = value.split("\t")
    if len(parts) != 4:
        return None
    try:
        return Entry(parts[0], int(parts[1]), int(parts[2]), float(parts[3]))
    except ValueError:
        return None


def _slot_value(state: SlotState) -> str:
    value = f"{state.tail}\t{state.tokens}\t{state.at}\t{state.since}"
    return value + f"\t{state.file}\t{state.file_tail}" if state.file else value


def _slot(value: str) -> SlotState | None:
    parts = value.split("\t")
    if len(parts) not in (4, 6):
        return None
    try:
        return SlotState(parts[0], int(parts[1]), float(parts[2]), float(parts[3]), *parts[4:6])
    except ValueError:
        return None


def _slot_key(field: str) -> tuple[str, int] | None:
    backend, _, slot = field.rpartition("\t")
    try:
        return (backend, int(slot)) if backend else None
    except ValueError:
        return None


def _pairs(flat: list[Any]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=False))


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0
