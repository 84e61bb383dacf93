"""What one proxied request costs the upstream client: httpx vs ccgate's own (router/backends/wire.py).

    python bench/upstream_client.py [--requests 2000]

Both send the ~78 KB Claude Code request to the same stub upstream (bench/overhead.py's), one
after another on a kept-alive connection, and read the whole answer (JSON, and a short SSE
stream). CPU µs is this process's CPU time per request: the client's own cost, which is what
ccgate pays on every request; wall µs includes the stub's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import FIXTURE, start_stub  # noqa: E402
from router.backends.wire import WireClient  # noqa: E402

HEADERS = {"content-type": "application/json", "accept-encoding": "identity"}


async def measure(one: Callable[[], Awaitable[int]], n: int) -> tuple[float, float]:
    for _ in range(100):  # warm: connections, caches
        await one()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await one()
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


async def with_httpx(url: str, body: bytes, n: int) -> tuple[float, float]:
    async with httpx.AsyncClient(timeout=30) as client:

        async def one() -> int:
            request = client.build_request("POST", url + "/v1/messages", content=body, headers=HEADERS)
            response = await client.send(request, stream=True)
            size = sum([len(part) async for part in response.aiter_bytes()])
            await response.aclose()
            return size

        return await measure(one, n)


async def with_wire(url: str, body: bytes, n: int) -> tuple[float, float]:
    client = WireClient(url, 5)

    async def one() -> int:
        response = await client.request("POST", "/v1/messages", body, HEADERS)
        size = sum([len(part) async for part in response.aiter_bytes()])
        await response.aclose()
        return size

    try:
        return await measure(one, n)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    capture = json.loads(FIXTURE.read_text())["body"]
    stub, url = start_stub()
    print(f"{'client':<10}{'answer':<8}{'wall µs':>10}{'CPU µs':>10}{'CPU × wire':>12}")
    try:
        for mode, stream in (("json", False), ("stream", True)):
            body = json.dumps({**capture, "stream": stream}).encode()
            wire = uvloop.run(with_wire(url, body, args.requests))
            slow = uvloop.run(with_httpx(url, body, args.requests))
            print(f"{'wire':<10}{mode:<8}{wire[0]:10.0f}{wire[1]:10.0f}{1:12.2f}")
            print(f"{'httpx':<10}{mode:<8}{slow[0]:10.0f}{slow[1]:10.0f}{slow[1] / wire[1]:12.2f}")
    finally:
        stub.terminate()


if __name__ == "__main__":
    main()
