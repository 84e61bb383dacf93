"""Team keys, kept in Redis hashed: a key is shown once, when it is made, and never stored.

`{prefix}keys` maps the SHA-256 of each key to its record (name, team, its own limits, when it
was made and revoked); `{prefix}key-names` maps each name to its hash, for `list` and `revoke`.
A lookup is one HGET; what it finds is kept for `cache_seconds` (a revoked key is refused by
every replica within that time).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import msgspec
import redis.asyncio as redis

from router.policy.identity import Limits
from router.state.redis_failures import REDIS_FAILURES

KEY_PREFIX = "ccg-"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    team: str
    hash: str
    limits: Limits = Limits()
    created: float = 0.0
    revoked: float | None = None

    def public(self) -> dict:
        """The record as `keys list --json` and /admin/keys show it: never its hash."""
        return {k: v for k, v in msgspec.to_builtins(self).items() if k != "hash"}


class KeyProblem(Exception):
    """A key operation that cannot be done: the message says why."""


class KeysUnavailable(Exception):
    """A key never seen before cannot be checked: Redis does not answer."""


@dataclass(slots=True)
class _Cached:
    record: KeyRecord | None
    until: float


class KeyStore:
    def __init__(self, client: redis.Redis, prefix: str = "ccgate:", cache_seconds: float = 0.5) -> None:
        self.client = client
        self.by_hash = prefix + "keys"
        self.by_name = prefix + "key-names"
        self.cache_seconds = cache_seconds
        self._cache: dict[str, _Cached] = {}

    async def add(self, name: str, team: str, limits: Limits) -> str:
        """Make a key; the secret is returned once and kept nowhere."""
        if not name or not team:
            raise KeyProblem("a key needs a name and a team")
        existing = await self.client.hget(self.by_name, name)
        if existing is not None:
            raise KeyProblem(f"a key named {name!r} exists (revoke it first, or choose another name)")
        key = new_key()
        digest = key_hash(key)
        record = KeyRecord(name=name, team=team, hash=digest, limits=limits, created=time.time())
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.by_hash, digest, msgspec.json.encode(record))
        pipe.hset(self.by_name, name, digest)
        await pipe.execute()
        return key

    async def revoke(self, name: str) -> KeyRecord:
        digest = await self.client.hget(self.by_name, name)
        if digest is None:
            raise KeyProblem(f"no key named {name!r}")
        digest = digest.decode() if isinstance(digest, bytes) else digest
        raw = await self.client.hget(self.by_hash, digest)
        if raw is None:
            raise KeyProblem(f"no key named {name!r}")
        record = msgspec.json.decode(raw, type=KeyRecord)
        revoked = msgspec.structs.replace(record, revoked=record.revoked or time.time())
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.by_hash, digest, msgspec.json.encode(revoked))
        pipe.hdel(self.by_name, name)  # the name may be used again; the record stays, revoked
        await pipe.execute()
        self._cache.pop(digest, None)
        return revoked

    async def records(self) -> list[KeyRecord]:
        raw = await self.client.hgetall(self.by_hash)
        return sorted((msgspec.json.decode(v, type=KeyRecord) for v in raw.values()), key=lambda r: r.created)

    async def lookup(self, key: str) -> KeyRecord | None:
        """The record of a presented key (revoked ones too: the caller says which); None if unknown."""
        digest = key_hash(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached.until > now:
            return cached.record
        try:
            raw = await self.client.hget(self.by_hash, digest)
        except REDIS_FAILURES as exc:
            if cached is not None:  # what was known a moment ago, until Redis answers again
                return cached.record
            raise KeysUnavailable(f"team keys cannot be checked: Redis is unavailable ({type(exc).__name__})") from None
        record = msgspec.json.decode(raw, type=KeyRecord) if raw is not None else None
        if record is not None and not hmac.compare_digest(record.hash, digest):
            record = None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = _Cached(record, now + self.cache_seconds)
        return record
