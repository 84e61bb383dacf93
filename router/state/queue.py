"""Requests waiting for a busy local backend (a key's `when_busy: wait`), first come first served,
across replicas: a Redis sorted set per backend scored by arrival, each member carrying its own
deadline so that the tickets of a replica that died lapse by themselves. Without Redis, a list.
"""

from __future__ import annotations

import contextlib
import time
import uuid

import redis.asyncio as redis

from router.state.redis_failures import REDIS_FAILURES


class SlotQueue:
    def __init__(self, client: redis.Redis | None = None, prefix: str = "ccgate:") -> None:
        self.client = client
        self.prefix = prefix
        self._local: dict[str, list[tuple[float, str]]] = {}  # backend → (deadline, ticket), in order
        self._arrivals: dict[str, float] = {}  # ticket → when it joined, while it waits

    def _key(self, backend: str) -> str:
        return f"{self.prefix}queue:{backend}"

    async def join(self, backend: str, wait: float) -> str:
        now = time.time()
        ticket = f"{now + wait:.3f}|{uuid.uuid4().hex}"
        self._local.setdefault(backend, []).append((now + wait, ticket))
        self._arrivals[ticket] = now
        if self.client is not None:
            with contextlib.suppress(*REDIS_FAILURES):  # Redis away: this replica's own order holds
                await self.client.zadd(self._key(backend), {ticket: now})
        return ticket

    async def first(self, backend: str, ticket: str) -> bool:
        """Whether `ticket` is the oldest live one waiting for `backend`."""
        now = time.time()
        local = [t for t in self._local.get(backend, []) if t[0] > now or t[1] == ticket]
        self._local[backend] = local
        if self.client is None:
            return bool(local) and local[0][1] == ticket
        try:
            waiting = await self.client.zrange(self._key(backend), 0, 15)
        except REDIS_FAILURES:
            return bool(local) and local[0][1] == ticket
        members = [m.decode() if isinstance(m, bytes) else m for m in waiting]
        if ticket not in members and len(members) < 16 and ticket in self._arrivals:
            # Not in the queue at all: it joined while Redis was away, or a failover lost it (the
            # old master had not passed it on). Back in its place, by its arrival (the next look
            # decides); else it would wait out its whole deadline behind nobody.
            with contextlib.suppress(*REDIS_FAILURES):
                await self.client.zadd(self._key(backend), {ticket: self._arrivals[ticket]}, nx=True)
            return False
        for member in members:
            if member == ticket:
                return True
            if _deadline(member) > now:
                return False  # someone older, still waiting
            with contextlib.suppress(*REDIS_FAILURES):  # lapsed: its replica died, or it left
                await self.client.zrem(self._key(backend), member)
        return False

    async def leave(self, backend: str, ticket: str) -> None:
        self._local[backend] = [t for t in self._local.get(backend, []) if t[1] != ticket]
        self._arrivals.pop(ticket, None)
        if self.client is not None:
            with contextlib.suppress(*REDIS_FAILURES):
                await self.client.zrem(self._key(backend), ticket)


def _deadline(member: str) -> float:
    try:
        return float(member.split("|", 1)[0])
    except ValueError:
        return 0.0
