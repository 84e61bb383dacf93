"""Limits and usage of team keys, in Redis so that every replica counts the same.

- requests per minute: a sliding one-minute log per key (`{prefix}rl:req:{key}`, a sorted set of
  arrival times on Redis's own clock), checked and added to by one script at admission, so that
  two replicas can never both admit the limit's last request, and no window edge lets a burst of
  twice the limit through;
- tokens per minute: the tokens each answer used (input, cached and output, as the backend
  reported them) logged in `{prefix}rl:tok:{key}` when the answer ends, their running total in
  `{prefix}rl:tokn:{key}`; admission refuses a key whose last minute already holds its limit;
- a cloud budget: cloud tokens per day or month, `{prefix}budget:{key}:{period}`; once spent,
  cloud backends are skipped for the key (local ones still serve it);
- usage: `{prefix}usage:{day}` hash, field "key\tteam\tbackend\tmodel\tkind" → tokens (kind:
  input, cached, output), kept 400 days; with Redis's append-only file it survives restarts.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import Pipeline

from router.policy.identity import Identity
from router.policy.schema import Price
from router.protocol.usage import Usage
from router.state.redis_failures import REDIS_FAILURES
from router.state.shared import ScriptCall

log = logging.getLogger("ccgate.accounting")
USAGE_KINDS = ("input", "cached", "output")
USAGE_TTL = 400 * 86400
MAX_DAYS = 400
USAGE_BY = ("key", "team", "backend", "model")
WINDOW_MS = 60_000
Pending = tuple[Identity, str, bool, Usage, float]  # who, backend, cloud?, tokens, when

# KEYS: request log, token log, budget counter, token sum. ARGV: rpm, tpm, a unique member,
# budget wanted. The token sum is the log's running total (entries add to it when logged and
# leave it when they expire), so admission costs the entries that expired since the last one,
# not the whole minute's: summing the log each time cost 10-14 ms of Redis's single thread per
# request for a key sending 100 a second, which capped the whole team (bench/memory.py --full).
# Returns {refused (0 no, 1 requests, 2 tokens), requests in the window, ms until it would pass,
# tokens in the window, cloud tokens spent}.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = now - 60000
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = 0
if tpm > 0 then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', since)
  if #expired > 0 then
    local gone = 0
    for i = 1, #expired do gone = gone + (tonumber(string.match(expired[i], '^%d+')) or 0) end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
    redis.call('DECRBY', KEYS[4], gone)
  end
  if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('DEL', KEYS[4]) end
  used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used >= tpm then
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    local left = used
    for i = 1, #entries, 2 do
      left = left - (tonumber(string.match(entries[i], '^%d+')) or 0)
      if left < tpm then return {2, 0, tonumber(entries[i + 1]) + 60000 - now, used, 0} end
    end
  end
end
local made = 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
  made = redis.call('ZCARD', KEYS[1])
  if made >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, made, tonumber(oldest[2]) + 60000 - now, used, 0}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], 60000)
  made = made + 1
end
local spent = 0
if ARGV[4] == '1' then spent = tonumber(redis.call('GET', KEYS[3]) or '0') end
return {0, made, 0, used, spent}
"""

# KEYS: token log, token sum. ARGV: tokens, a unique member.
LOG_TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1] .. ':' .. ARGV[2])
redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], 60000)
redis.call('PEXPIRE', KEYS[2], 60000)
return 1
"""


@dataclass(frozen=True, slots=True)
class Admission:
    """What admission found: refused (429, with when to come back) or admitted, and whether the
    key's cloud budget is spent (then only local backends may serve it)."""

    refused: str = ""  # requests | tokens: the limit it is over; "" when admitted
    limit: int = 0
    remaining: int = 0
    reset_seconds: float = 0.0
    budget_spent: bool = False
    tokens_limit: int = 0
    tokens_remaining: int = 0

    @property
    def admitted(self) -> bool:
        return not self.refused


def budget_period(now: float, per: str) -> str:
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    return day if per == "day" else day[:7]


def period_reset(now: float, per: str) -> float:
    """Seconds until the budget period (a UTC day or month) ends."""
    if per == "day":
        return 86400 - (now % 86400)
    today = datetime.fromtimestamp(now, tz=UTC)
    following = datetime(today.year + (today.month == 12), today.month % 12 + 1, 1, tzinfo=UTC)
    return following.timestamp() - now


class Accounting:
    def __init__(self, client: redis.Redis, prefix: str = "ccgate:") -> None:
        self.client = client
        self.prefix = prefix
        self._admit = client.register_script(ADMIT)
        self._log_tokens = client.register_script(LOG_TOKENS)
        self._pending: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._unchecked_said = -1e9  # when "limits not checked" was last logged

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def admission_call(self, identity: Identity, now: float | None = None) -> ScriptCall | None:
        """The admission script for this key, to run beside the routing view in one round trip;
        None when the key has no limit to check."""
        now = time.time() if now is None else now
        limits = identity.limits
        if not (limits.rpm or limits.tpm or limits.cloud_tokens):
            return None
        key = identity.key
        budget = self._key("budget", key, budget_period(now, limits.budget_per or "day"))
        return ScriptCall(
            self._admit.sha,
            [self._key("rl:req", key), self._key("rl:tok", key), budget, self._key("rl:tokn", key)],
            [limits.rpm or 0, limits.tpm or 0, uuid.uuid4().hex, int(bool(limits.cloud_tokens))],
        )

    async def admit(self, identity: Identity, now: float | None = None) -> Admission:
        """The key's admission, in a round trip of its own."""
        return await self.admission_of(identity, self.admission_call(identity, now), None)

    async def admission_of(self, identity: Identity, call: ScriptCall | None, answered: Any) -> Admission:
        """What `call` (admission_call's) decided: `answered`, its result when it ran beside the
        routing view, or its result now (it did not run there, or Redis had forgotten it)."""
        if call is None:
            return Admission()
        if answered is None:
            try:
                answered = await self._admit(keys=call.keys, args=call.args)
            except REDIS_FAILURES as exc:
                # Limits live in Redis; while it is away they are not checked (the routing
                # state falls back the same way): a team keeps working, the log says so.
                now = time.monotonic()
                if now - self._unchecked_said > 10:
                    self._unchecked_said = now
                    log.warning("limits of team keys not checked: Redis unavailable (%s)", type(exc).__name__)
                return Admission()
        refused, made, wait_ms, used, spent = answered
        limits = identity.limits
        reset = max(0.0, int(wait_ms) / 1000)
        if refused == 1:
            return Admission("requests", limits.rpm or 0, 0, reset)
        if refused == 2:
            return Admission("tokens", reset_seconds=reset, tokens_limit=limits.tpm or 0)
        return Admission(
            limit=limits.rpm or 0,
            remaining=max(0, (limits.rpm or 0) - int(made)),
            budget_spent=bool(limits.cloud_tokens) and int(spent) >= (limits.cloud_tokens or 0),
            tokens_limit=limits.tpm or 0,
            tokens_remaining=max(0, (limits.tpm or 0) - int(used)),
        )

    def record(self, identity: Identity, backend: str, cloud: bool, usage: Usage) -> None:
        """Count an answer's tokens, behind it (the answer is already on its way): records wait
        in a queue that one writer empties, each batch in one pipeline, so under load many
        answers share a round trip to Redis, and none waits for one. A key's tokens count
        against its tpm limit once written, a round trip after its answer."""
        if not usage.input + usage.cached + usage.output:
            return
        self._pending.append((identity, backend, cloud, usage, time.time()))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                pipe = self.client.pipeline(transaction=False)
                await self._queue_batch(pipe, batch)
                await pipe.execute()
            except REDIS_FAILURES as exc:
                keys = sorted({identity.key for identity, *_ in batch})
                log.warning("usage of key(s) %s not recorded (%s)", ", ".join(keys), type(exc).__name__)

    async def _queue_batch(self, pipe: Pipeline, batch: list[Pending]) -> None:
        counts: dict[tuple[str, str], int] = {}  # (usage hash, field) -> tokens, summed over the batch
        expiring: set[str] = set()
        for identity, backend, cloud, usage, now in batch:
            total = usage.input + usage.cached + usage.output
            if identity.limits.tpm:
                # a script in a pipeline is loaded first if Redis does not know it (after a restart)
                logged = [self._key("rl:tok", identity.key), self._key("rl:tokn", identity.key)]
                await self._log_tokens(keys=logged, args=[total, uuid.uuid4().hex], client=pipe)
            if cloud:
                budget = self._key("budget", identity.key, budget_period(now, identity.limits.budget_per or "day"))
                pipe.incrby(budget, total)
                pipe.expire(budget, 40 * 86400)
            usage_key = self._key("usage", budget_period(now, "day"))
            expiring.add(usage_key)
            model = (usage.model or "?").replace("\t", " ")[:120]
            for kind, n in zip(USAGE_KINDS, (usage.input, usage.cached, usage.output), strict=True):
                if n:
                    field = f"{identity.key}\t{identity.team}\t{backend}\t{model}\t{kind}"
                    counts[usage_key, field] = counts.get((usage_key, field), 0) + n
        for (usage_key, field), n in counts.items():
            pipe.hincrby(usage_key, field, n)
        for usage_key in expiring:
            pipe.expire(usage_key, USAGE_TTL)

    async def usage(self, days: Iterable[str]) -> list[UsageRow]:
        """What was used on these days (YYYY-MM-DD)."""
        days = list(days)
        pipe = self.client.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self._key("usage", day))
        rows = []
        for day, fields in zip(days, await pipe.execute(), strict=True):
            for field, value in fields.items():
                field = field.decode() if isinstance(field, bytes) else field
                parts = field.split("\t")
                if len(parts) == 5 and parts[4] in USAGE_KINDS:
                    rows.append(UsageRow(day, *parts, int(value)))
        return rows

    async def drain(self) -> None:
        """Wait for the usage writes queued or in flight (at shutdown, and for tests)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.gather(self._writer, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class UsageRow:
    day: str
    key: str
    team: str
    backend: str
    model: str
    kind: str  # input | cached | output
    tokens: int


def usage_days(since: str) -> int | None:
    """Days in a `--since` such as 7d (or 7); None when it is not one."""
    text = since.strip().removesuffix("d")
    return int(text) if text.isdigit() and 1 <= int(text) <= MAX_DAYS else None


def last_days(count: int, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    return [budget_period(now - i * 86400, "day") for i in range(count)]


def price_of(model: str, prices: Mapping[str, Price]) -> Price | None:
    """The price of the first glob in `prices` that matches the model."""
    return next((p for glob, p in prices.items() if fnmatch.fnmatchcase(model, glob)), None)


def summarize(
    rows: Iterable[UsageRow], by: str, local: Iterable[str], prices: Mapping[str, Price] | None = None
) -> list[dict]:
    """Usage totalled per key, team or backend: tokens input, cached and output, the share that
    the local box served, and the cost in dollars of what was priced (None when nothing was)."""
    local = set(local)
    totals: dict[str, dict] = {}
    for row in rows:
        name = getattr(row, by)
        entry = totals.setdefault(
            name, {by: name, "input": 0, "cached": 0, "output": 0, "local": 0, "cloud": 0, "cost_usd": None}
        )
        entry[row.kind] += row.tokens
        entry["local" if row.backend in local else "cloud"] += row.tokens
        price = price_of(row.model, prices or {})
        if price is not None:
            entry["cost_usd"] = (entry["cost_usd"] or 0.0) + row.tokens * getattr(price, row.kind) / 1e6
    out = sorted(totals.values(), key=lambda e: -(e["input"] + e["cached"] + e["output"]))
    for entry in out:
        total = entry["local"] + entry["cloud"]
        entry["local_share"] = round(entry["local"] / total, 3) if total else 0.0
        if entry["cost_usd"] is not None:
            entry["cost_usd"] = round(entry["cost_usd"], 4)
    return out
