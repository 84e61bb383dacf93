"""What one proxied request costs the upstream client: ccgate's (router/backends/http.py: aiohttp
with its reuse checks) against a plain aiohttp session, and httpx.

    python bench/upstream_client.py [--requests 2000]

Each sends the ~78 KB Claude Code request to the same stub upstream (bench/overhead.py's), one
after another on a kept-alive connection, and reads the whole answer (JSON, and a short SSE
stream). CPU µs is this process's CPU time per request: the client's own cost, which is what
ccgate pays on every request; wall µs includes the stub's. The ratio is against plain aiohttp.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import FIXTURE, start_stub  # noqa: E402
from router.backends.http import UpstreamClient  # noqa: E402
from router.config import BackendConfig  # noqa: E402

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


async def with_aiohttp(url: str, body: bytes, n: int) -> tuple[float, float]:
    async with aiohttp.ClientSession() as session:

        async def one() -> int:
            async with session.post(url + "/v1/messages", data=body, headers=HEADERS) as response:
                return sum([len(part) async for part in response.content.iter_any()])

        return await measure(one, n)


async def with_ccgate(url: str, body: bytes, n: int) -> tuple[float, float]:
    client = UpstreamClient("stub", BackendConfig(kind="anthropic", url=url, api_key="x"))

    async def one() -> int:
        _, content = await client.post("/v1/messages", body, HEADERS)
        return len(content)

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
    print(f"{'client':<10}{'answer':<8}{'wall µs':>10}{'CPU µs':>10}{'CPU × aiohttp':>15}")
    try:
        for mode, stream in (("json", False), ("stream", True)):
            body = json.dumps({**capture, "stream": stream}).encode()
            plain = uvloop.run(with_aiohttp(url, body, args.requests))
            ours = uvloop.run(with_ccgate(url, body, args.requests))
            slow = uvloop.run(with_httpx(url, body, args.requests))
            print(f"{'aiohttp':<10}{mode:<8}{plain[0]:10.0f}{plain[1]:10.0f}{1:15.2f}")
            print(f"{'ccgate':<10}{mode:<8}{ours[0]:10.0f}{ours[1]:10.0f}{ours[1] / plain[1]:15.2f}")
            print(f"{'httpx':<10}{mode:<8}{slow[0]:10.0f}{slow[1]:10.0f}{slow[1] / plain[1]:15.2f}")
    finally:
        stub.terminate()


if __name__ == "__main__":
    main()
