"""The tokens-per-minute window against a real Redis: its running total follows the log as
answers are counted and as entries leave the minute, without summing the log on every request."""

from __future__ import annotations

import secrets

import redis.asyncio as redis

from router.policy.identity import Identity, Limits
from router.protocol.usage import Usage
from router.state.accounting import Accounting


async def test_the_running_total_follows_the_log_in_and_out_of_the_minute(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"test-window-{secrets.token_hex(4)}:"
    accounting = Accounting(client, prefix)
    alice = Identity("alice", "core", Limits(tpm=1000))
    try:
        for tokens in (100, 200, 300):
            accounting.record(alice, "local", False, Usage(input=tokens))
        await accounting.drain()
        admitted = await accounting.admit(alice)
        assert admitted.admitted and admitted.tokens_remaining == 1000 - 600

        # an answer from two minutes ago (as if logged then): it leaves the sum at the next admission
        now_ms = int((await client.time())[0]) * 1000
        await client.zadd(prefix + "rl:tok:alice", {"250:old": now_ms - 120_000})
        await client.incrby(prefix + "rl:tokn:alice", 250)
        admitted = await accounting.admit(alice)
        assert admitted.tokens_remaining == 1000 - 600
        assert int(await client.get(prefix + "rl:tokn:alice")) == 600
        assert await client.zcard(prefix + "rl:tok:alice") == 3

        accounting.record(alice, "local", False, Usage(input=400, output=50))
        await accounting.drain()
        refused = await accounting.admit(alice)
        assert refused.refused == "tokens" and 0 < refused.reset_seconds <= 60

        # the whole log gone (a minute of silence): the sum goes with it
        await client.delete(prefix + "rl:tok:alice")
        admitted = await accounting.admit(alice)
        assert admitted.admitted and admitted.tokens_remaining == 1000
        assert await client.exists(prefix + "rl:tokn:alice") == 0
    finally:
        keys = [k async for k in client.scan_iter(prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_admission_run_twice_and_settling_twice_count_once(redis_url: str) -> None:
    """Admission runs again when the routing read beside it failed; a batch of usage is sent
    again when Redis failed under it: neither may hold or count anything twice."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"test-twice-{secrets.token_hex(4)}:"
    accounting = Accounting(client, prefix)
    bob = Identity("bob", "core", Limits(tpm=10_000, cloud_tokens=50_000))
    try:
        call = accounting.admission_call(bob, 3000)
        first = await accounting.admission_of(bob, call, None)
        again = await accounting.admission_of(bob, call, None)  # the same script, the same member
        assert first.admitted and again.admitted and again.reservation == first.reservation
        assert int(await client.get(prefix + "rl:tokn:bob")) == 3000  # held once
        [budget_sum] = [k for k in await client.keys(prefix + "budget-resvn:bob:*")]
        assert int(await client.get(budget_sum)) == 3000
        used = Usage(input=100, output=20, final=True)
        for _ in range(2):  # settled twice (a batch sent again)
            accounting.record(bob, "cloud", True, used, first.reservation)
            await accounting.drain()
        assert int(await client.get(prefix + "rl:tokn:bob")) == 120  # the reservation gone, what it used in
        assert int(await client.get(budget_sum) or 0) == 0
        [spent] = [k for k in await client.keys(prefix + "budget:bob:*")]
        assert int(await client.get(spent)) == 120
    finally:
        async for key in client.scan_iter(prefix + "*"):
            await client.delete(key)
        await client.aclose()
