"""Limits and usage of team keys, in Redis so that every replica counts the same.

- requests per minute: a sliding one-minute log per key (`{prefix}rl:req:{key}`, a sorted set of
  arrival times on Redis's own clock), checked and added to by one script at admission, so that
  two replicas can never both admit the limit's last request, and no window edge lets a burst of
  twice the limit through;
- tokens per minute: a cap, under concurrency too. Admission reserves the request's estimate
  (its input estimate and max_tokens, as the providers count it) in the minute's token log
  `{prefix}rl:tok:{key}` (running total `{prefix}rl:tokn:{key}`), in the same script that admits
  it; a request whose reservation does not fit beside what the minute holds gets 429 (alone in
  an empty minute, any request fits: the cap is overshot by one request at most). The answer
  settles it: the reservation leaves the log, the tokens it really used (every kind the backend
  reported) come in;
- a cloud budget: cloud tokens per day or month, `{prefix}budget:{key}:{period}`, the same way:
  admission reserves the estimate in `{prefix}budget-resv:{key}:{period}` (an entry that lapses
  after RESERVATION_TTL, should a replica die holding it); when it does not fit, cloud backends
  are skipped for the request (local ones still serve it); the answer settles it with the cloud
  tokens it used (none when the box answered);
- usage: `{prefix}usage:{day}` hash, field "key\tteam\tbackend\tmodel\tkind" → tokens (kind:
  input, cached, cache_write, cache_write_1h, output, and `estimated`: the output tokens counted
  from what was relayed, for an answer cut short), kept 400 days; with Redis's append-only file
  it survives restarts.
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
from router.protocol.usage import TOKEN_KINDS, Usage
from router.state.redis_failures import REDIS_FAILURES
from router.state.shared import ScriptCall

log = logging.getLogger("ccgate.accounting")
USAGE_KINDS = (*TOKEN_KINDS, "estimated")  # `estimated` is part of `output`, not more of it
USAGE_TTL = 400 * 86400
MAX_DAYS = 400
USAGE_BY = ("key", "team", "backend", "model")
WINDOW_MS = 60_000
RESERVATION_TTL = 900  # seconds a budget reservation holds, if nothing settles it (a replica died)
# A batch of usage that Redis failed to take is tried again, a second more apart each time up
# to WRITE_PAUSE_MAX: 30 attempts span about 2 minutes 20 s, longer than a Sentinel failover
# with its default 30 s down-after (usage is what a team is billed: it should outlive one).
WRITE_ATTEMPTS = 30
WRITE_PAUSE_MAX = 5.0
HELD_RETRY = 5  # seconds a request refused for reservations in flight is told to wait
BUDGET_TTL = 40 * 86400


@dataclass(frozen=True, slots=True)
class Reservation:
    """What admission set aside for one request, for the answer to settle."""

    member: str
    tokens: int
    period: str  # the budget period it was made in (its cloud tokens count there)


# who, backend, cloud?, tokens, when, the reservation, and whether its usage hash was written
# already (a batch tried again after a failure settles again, safely, but adds no usage twice)
# (..., an id of its own: a usage write tried again after a failure counts once, see RECORD)
Pending = tuple[Identity, str, bool, Usage | None, float, Reservation | None, str]

# KEYS: request log, token log, budget counter, token sum, budget reservations, their sum.
# ARGV: rpm, tpm, a unique member, the budget (0: none), the request's estimate, the budget
# reservation's life (ms). A log's running total is kept beside it (entries add to it when logged
# and leave it when they expire), so admission costs the entries that expired since the last one,
# not the whole minute's: summing the log each time cost 10-14 ms of Redis's single thread per
# request for a key sending 100 a second, which capped the whole team (bench/memory.py --full).
# Returns {refused (0 no, 1 requests, 2 tokens), requests in the window, ms until it would pass,
# tokens in the window (this reservation included), cloud tokens spent and held, budget state (0
# room, 1 spent, 2 held by requests in flight: their answers will give back what they did not use)}.
ADMIT = """
local SETTLE_WAIT_MS = 2000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm, budget, est = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function held(log, sum, upto)
  local expired = redis.call('ZRANGEBYSCORE', log, '-inf', upto)
  if #expired > 0 then
    local gone = 0
    for i = 1, #expired do gone = gone + (tonumber(string.match(expired[i], '^%d+')) or 0) end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', upto)
    redis.call('DECRBY', sum, gone)
  end
  if redis.call('EXISTS', log) == 0 then redis.call('DEL', sum) end
  return tonumber(redis.call('GET', sum) or '0')
end
local used = 0
if tpm > 0 then
  used = held(KEYS[2], KEYS[4], now - 60000)
  if used > 0 and used + est > tpm then
    local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    local left, wait, settling = used, 60000, false
    for i = 1, #entries, 2 do
      settling = settling or string.find(entries[i], ':r:', 1, true) ~= nil
      left = left - (tonumber(string.match(entries[i], '^%d+')) or 0)
      if left <= 0 or left + est <= tpm then wait = tonumber(entries[i + 1]) + 60000 - now break end
    end
    -- reservations of requests in flight are settled as their answers end, most long before their minute
    if settling then wait = math.min(wait, SETTLE_WAIT_MS) end
    return {2, 0, wait, used, 0, 0}
  end
end
local made = 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  made = redis.call('ZCARD', KEYS[1])
  if made >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, made, tonumber(oldest[2]) + 60000 - now, used, 0, 0}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], 60000)
  made = made + 1
end
if tpm > 0 and est > 0 then
  if redis.call('ZADD', KEYS[2], now, est .. ':r:' .. ARGV[3]) == 1 then redis.call('INCRBY', KEYS[4], est) end
  redis.call('PEXPIRE', KEYS[2], 60000)
  redis.call('PEXPIRE', KEYS[4], 60000)
  used = used + est
end
local spent, full = 0, 0
if budget > 0 then
  spent = tonumber(redis.call('GET', KEYS[3]) or '0')
  local holding = held(KEYS[5], KEYS[6], now)
  if spent >= budget then
    full = 1
  elseif holding > 0 and spent + holding + est > budget then
    full = 2
  elseif est > 0 then
    if redis.call('ZADD', KEYS[5], now + tonumber(ARGV[6]), est .. ':' .. ARGV[3]) == 1 then
      redis.call('INCRBY', KEYS[6], est)
    end
    redis.call('PEXPIRE', KEYS[5], ARGV[6])
    redis.call('PEXPIRE', KEYS[6], ARGV[6])
  end
  spent = spent + holding
end
return {0, made, 0, used, spent, full}
"""

# KEYS: token log, token sum, budget counter, budget reservations, their sum, a marker of this
# settlement. ARGV: the member, the reservation's tokens, the tokens used (for the minute's log;
# 0: no tpm limit), the cloud tokens used, the budget counter's life (s). It settles once (the
# marker): a batch sent again after Redis failed under it counts nothing twice; and a
# reservation gone already (its minute passed, or its hold lapsed) is not taken off twice.
# KEYS: the answer's marker, the day's usage hash. ARGV: the marker's life, the hash's, then
# field/tokens pairs. A batch that failed may or may not have reached Redis (a reply lost after
# the write, or a connection refused before it): sent again, the marker makes it count once.
RECORD = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return 1
"""
RECORD_MARK_TTL = 600  # seconds: longer than a batch is tried again (WRITE_ATTEMPTS)

SETTLE = """
if not redis.call('SET', KEYS[6], '1', 'NX', 'EX', 600) then return 0 end
if redis.call('ZREM', KEYS[1], ARGV[2] .. ':r:' .. ARGV[1]) == 1 then redis.call('DECRBY', KEYS[2], ARGV[2]) end
if tonumber(ARGV[3]) > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. ARGV[1])
  redis.call('INCRBY', KEYS[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[1], 60000)
  redis.call('PEXPIRE', KEYS[2], 60000)
end
if redis.call('ZREM', KEYS[4], ARGV[2] .. ':' .. ARGV[1]) == 1 then redis.call('DECRBY', KEYS[5], ARGV[2]) end
if tonumber(ARGV[4]) > 0 then
  redis.call('INCRBY', KEYS[3], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
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
    reservation: Reservation | None = None  # what the answer settles
    budget_held: bool = False  # the budget is not spent, but held by the key's requests in flight

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
        self._settle = client.register_script(SETTLE)
        self._record = client.register_script(RECORD)
        self._pending: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self._unchecked_said = -1e9  # when "limits not checked" was last logged

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def admission_call(self, identity: Identity, estimate: int = 0, now: float | None = None) -> ScriptCall | None:
        """The admission script for this key, to run beside the routing view in one round trip;
        None when the key has no limit to check. `estimate`: the tokens the request may use
        (input and max_tokens), reserved against its tpm and cloud budget."""
        now = time.time() if now is None else now
        limits = identity.limits
        if not (limits.rpm or limits.tpm or limits.cloud_tokens):
            return None
        key = identity.key
        period = budget_period(now, limits.budget_per or "day")
        keys = [
            self._key("rl:req", key),
            self._key("rl:tok", key),
            self._key("budget", key, period),
            self._key("rl:tokn", key),
            self._key("budget-resv", key, period),
            self._key("budget-resvn", key, period),
        ]
        args = [
            limits.rpm or 0,
            limits.tpm or 0,
            uuid.uuid4().hex,
            limits.cloud_tokens or 0,
            max(0, estimate),
            RESERVATION_TTL * 1000,
        ]
        return ScriptCall(self._admit.sha, keys, args)

    async def admit(self, identity: Identity, estimate: int = 0, now: float | None = None) -> Admission:
        """The key's admission, in a round trip of its own."""
        return await self.admission_of(identity, self.admission_call(identity, estimate, now), None)

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
                return Admission(reservation=self.reservation_of(call))  # it may have run: settled all the same
        refused, made, wait_ms, used, _spent, full = answered
        limits = identity.limits
        reset = max(0.0, int(wait_ms) / 1000)
        if refused == 1:
            return Admission("requests", limits.rpm or 0, 0, reset)
        if refused == 2:
            return Admission("tokens", reset_seconds=reset, tokens_limit=limits.tpm or 0)
        member, estimate = call.args[2], call.args[4]
        period = call.keys[2].rsplit(":", 1)[-1]
        return Admission(
            limit=limits.rpm or 0,
            remaining=max(0, (limits.rpm or 0) - int(made)),
            budget_spent=bool(full),
            budget_held=full == 2,
            tokens_limit=limits.tpm or 0,
            tokens_remaining=max(0, (limits.tpm or 0) - int(used)),
            reservation=Reservation(member, estimate, period) if limits.tpm or limits.cloud_tokens else None,
        )

    def record(
        self, identity: Identity, backend: str, cloud: bool, usage: Usage, reservation: Reservation | None = None
    ) -> None:
        """Count an answer's tokens and settle its reservation, behind it (the answer is already
        on its way): records wait in a queue that one writer empties, each batch in one pipeline,
        so under load many answers share a round trip to Redis, and none waits for one."""
        if not usage.total and reservation is None:
            return
        self._queue((identity, backend, cloud, usage, time.time(), reservation, uuid.uuid4().hex))

    @staticmethod
    def reservation_of(call: ScriptCall | None) -> Reservation | None:
        """What `call` (admission_call's) reserves if it runs: to give back should nothing learn
        that it did (the client gone, or the answer lost, during the round trip)."""
        if call is None:
            return None
        return Reservation(call.args[2], call.args[4], call.keys[2].rsplit(":", 1)[-1])

    def release(self, identity: Identity, reservation: Reservation | None) -> None:
        """A request that got no answer (refused by every backend, the client gone) frees what
        admission set aside for it."""
        if reservation is not None:
            self._queue((identity, "", False, None, time.time(), reservation, ""))

    def _queue(self, pending: Pending) -> None:
        self._pending.append(pending)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        failures = 0
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                pipe = self.client.pipeline(transaction=False)
                await self._queue_batch(pipe, batch)
                await pipe.execute()
                failures = 0
            except REDIS_FAILURES as exc:
                # settling is idempotent (a reservation leaves once): tried again a few times, so
                # a blip neither loses usage nor holds a key's budget for RESERVATION_TTL
                failures += 1
                keys = ", ".join(sorted({identity.key for identity, *_ in batch}))
                if failures > WRITE_ATTEMPTS:
                    log.warning("usage of key(s) %s not recorded (%s)", keys, type(exc).__name__)
                    failures = 0  # what arrives next gets its own attempts
                    continue
                log.info("usage of key(s) %s not written yet (%s): trying again", keys, type(exc).__name__)
                self._pending[:0] = batch
                await asyncio.sleep(min(failures, WRITE_PAUSE_MAX))

    async def _queue_batch(self, pipe: Pipeline, batch: list[Pending]) -> None:
        for identity, backend, cloud, usage, now, reservation, ident in batch:
            total = usage.total if usage is not None else 0
            limits = identity.limits
            if limits.tpm or reservation is not None or (cloud and total):
                key = identity.key
                period = reservation.period if reservation else budget_period(now, limits.budget_per or "day")
                keys = [
                    self._key("rl:tok", key),
                    self._key("rl:tokn", key),
                    self._key("budget", key, period),
                    self._key("budget-resv", key, period),
                    self._key("budget-resvn", key, period),
                ]
                member, held = (reservation.member, reservation.tokens) if reservation else (uuid.uuid4().hex, 0)
                keys.append(self._key("settled", member))
                args = [member, held, total if limits.tpm else 0, total if cloud else 0, BUDGET_TTL]
                # a script in a pipeline is loaded first if Redis does not know it (after a restart)
                await self._settle(keys=keys, args=args, client=pipe)
            if usage is None:
                continue
            model = (usage.model or "?").replace("\t", " ")[:120]
            fields: list[str | int] = []
            for kind, n in (*usage.counts(), ("estimated", usage.estimated)):
                if n:
                    fields += [f"{identity.key}\t{identity.team}\t{backend}\t{model}\t{kind}", n]
            if fields:
                keys = [self._key("recorded", ident), self._key("usage", budget_period(now, "day"))]
                await self._record(keys=keys, args=[RECORD_MARK_TTL, USAGE_TTL, *fields], client=pipe)

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

    async def drain(self, within: float | None = None) -> None:
        """Wait for the usage writes queued or in flight (at shutdown, and for tests); at most
        `within` seconds: a Redis that is away must not hold a stopping replica past its grace."""
        deadline = None if within is None else asyncio.get_running_loop().time() + within
        while self._writer is not None and not self._writer.done():
            left = None if deadline is None else deadline - asyncio.get_running_loop().time()
            done, _ = await asyncio.wait({self._writer}, timeout=left)
            if not done:
                self._writer.cancel()
                log.warning(
                    "usage not recorded: Redis did not take it before shutdown (%d answer(s) queued, "
                    "and the batch being written)",
                    len(self._pending),
                )
                return


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
    """Usage totalled per key, team, backend or model: tokens of each kind (input, cache reads,
    cache writes, output; `estimated`: the output counted from what was relayed of answers cut
    short), the share that the local box served, and the cloud's cost in dollars of what was
    priced (None when nothing was; the local box is free, its cache reads too)."""
    local = set(local)
    totals: dict[str, dict] = {}
    for row in rows:
        name = getattr(row, by)
        entry = totals.setdefault(name, {by: name, **dict.fromkeys(USAGE_KINDS, 0), "local": 0, "cloud": 0})
        entry.setdefault("cost_usd", None)
        entry[row.kind] += row.tokens
        if row.kind == "estimated":
            continue
        place = "local" if row.backend in local else "cloud"
        entry[place] += row.tokens
        price = price_of(row.model, prices or {}) if place == "cloud" else None
        if price is not None:
            entry["cost_usd"] = (entry["cost_usd"] or 0.0) + row.tokens * price.per_million(row.kind) / 1e6
    out = sorted(totals.values(), key=lambda e: -(e["local"] + e["cloud"]))
    for entry in out:
        total = entry["local"] + entry["cloud"]
        entry["local_share"] = round(entry["local"] / total, 3) if total else 0.0
        if entry["cost_usd"] is not None:
            entry["cost_usd"] = round(entry["cost_usd"], 4)
    return out
