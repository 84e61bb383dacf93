"""What one routing decision's Redis read costs ccgate, against the way it was read before.

    python bench/redis_view.py [--requests 3000]

Before: redis-py as it comes (commands packed in Python, answers parsed by hiredis), a pipeline
of MGET (Claude Code's first turn: 37 block hashes) and five HGETALLs of the shared state. Now:
RedisShared.view, one EVALSHA of the VIEW script over a connection that packs in C, and the
answer read into the routing view. Same keys, same local Redis (REDIS_URL). CPU µs is this
process's CPU per decision: what the gateway pays on every request.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as redis
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.state.redis_shared import VIEW_HASHES, RedisShared  # noqa: E402

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = "ccgate-bench-view:"
HASHES = [f"{i:024x}" for i in range(37)]


async def measure(read: Callable[[], Awaitable[Any]], n: int) -> tuple[float, float]:
    for _ in range(200):
        await read()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await read()
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


async def before(n: int) -> tuple[float, float]:
    client = redis.Redis.from_url(URL, decode_responses=True)
    await client.mset({f"{PREFIX}px:{h}": f"local\t0\t{i * 500}\t1700000000.0" for i, h in enumerate(HASHES)})
    await client.hset(PREFIX + "slots", mapping={f"local\t{i}": "abc\t1000\t1700000000.0\t0" for i in range(4)})

    async def read() -> list:
        pipe = client.pipeline(transaction=False)
        pipe.mget([f"{PREFIX}px:{h}" for h in HASHES])
        for name in VIEW_HASHES:
            pipe.hgetall(PREFIX + name)
        return await pipe.execute()

    try:
        return await measure(read, n)
    finally:
        await client.aclose()


async def now(n: int) -> tuple[float, float]:
    shared = RedisShared(URL, prefix=PREFIX)

    async def read() -> Any:
        view = await shared.view(HASHES)
        assert view.prefix.entries[-1] is not None
        return view

    try:
        return await measure(read, n)
    finally:
        await shared.client.delete(*(f"{PREFIX}px:{h}" for h in HASHES), PREFIX + "slots")
        await shared.client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    old = uvloop.run(before(args.requests))
    new = uvloop.run(now(args.requests))
    print(f"{'routing read':<44}{'wall µs':>9}{'CPU µs':>9}{'CPU ratio':>11}")
    print(f"{'before: redis-py pipeline of 6 commands':<44}{old[0]:9.0f}{old[1]:9.0f}{1:11.2f}")
    print(f"{'now: RedisShared.view (VIEW script, C packing)':<44}{new[0]:9.0f}{new[1]:9.0f}{new[1] / old[1]:11.2f}")


if __name__ == "__main__":
    main()
