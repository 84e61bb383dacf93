"""What one routing decision's Redis pipeline costs ccgate: redis-py as it comes vs ccgate's
connection (commands packed by hiredis in C, answers parsed by hiredis).

    python bench/redis_view.py [--requests 3000]

The pipeline is the one RedisShared.view sends for Claude Code's first turn: MGET of its 37
block hashes and the five small hashes of the shared state, against the local Redis (REDIS_URL).
CPU µs is this process's CPU per pipeline: what the gateway pays on every request.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import redis.asyncio as redis
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.state.redis_shared import _counted  # noqa: E402

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = "ccgate-bench-view:"


async def measure(client: redis.Redis, n: int) -> tuple[float, float]:
    keys = [f"{PREFIX}px:{i:024x}" for i in range(37)]
    await client.mset({k: f"local\t0\t{i * 500}\t1700000000.0" for i, k in enumerate(keys)})
    await client.hset(PREFIX + "slots", mapping={f"local\t{i}": "abc\t1000\t1700000000.0\t0" for i in range(4)})

    async def view() -> list:
        pipe = client.pipeline(transaction=False)
        pipe.mget(keys)
        for name in ("slots", "breakers", "inflight", "alive", "held"):
            pipe.hgetall(PREFIX + name)
        return await pipe.execute()

    for _ in range(200):
        await view()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await view()
    result = (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6
    await client.delete(*keys, PREFIX + "slots")
    await client.aclose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    plain = uvloop.run(measure(redis.Redis.from_url(URL, decode_responses=True), args.requests))
    counted = _counted(lambda: None)
    client = redis.Redis.from_url(URL, decode_responses=True, connection_class=counted)
    ours = uvloop.run(measure(client, args.requests))
    print(f"{'connection':<28}{'wall µs':>9}{'CPU µs':>9}{'CPU ratio':>11}")
    print(f"{'redis-py (hiredis parser)':<28}{plain[0]:9.0f}{plain[1]:9.0f}{1:11.2f}")
    print(f"{'ccgate (hiredis packer)':<28}{ours[0]:9.0f}{ours[1]:9.0f}{ours[1] / plain[1]:11.2f}")


if __name__ == "__main__":
    main()
