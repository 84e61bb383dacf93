"""A gateway's memory over many requests: RSS every tenth of a run of `--requests` (100k).

    python bench/memory.py [--requests 100000] [--concurrency 64] [--full]

The ~78 KB Claude Code request, non-streamed, to a stub upstream, from `--concurrency` clients;
`--full` runs the gateway as bench/overhead.py --full does (Redis state, team keys, OTLP export
to a live receiver). RSS must level off after warm-up, not grow with the requests served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import (  # noqa: E402
    FIXTURE,
    OtlpReceiver,
    _rss_mib,
    _start_gateway,
    start_stub,
)


async def _send(url: str, body: bytes, key: str, count: int, concurrency: int) -> None:
    headers = {"content-type": "application/json", "x-api-key": key}
    left = count
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with client.post("/v1/messages", data=body, headers=headers) as response:
                    answer = await response.read()
                assert response.status == 200, (response.status, answer[:500])

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    body = json.dumps({**json.loads(FIXTURE.read_text())["body"], "stream": False}).encode()
    stub, upstream = start_stub()
    receiver = OtlpReceiver() if args.full else None
    state, auth = ("redis", "keys") if args.full else ("memory", "open")
    logs = Path(tempfile.mkdtemp())
    otlp = receiver.url if receiver else None
    gateway, url, key = _start_gateway("uvicorn", upstream, logs, state=state, auth=auth, otlp=otlp)
    print(f"gateway log: {logs}/gateway-*.log")
    step = max(1, args.requests // 10)
    print(f"{args.requests:,} requests, {args.concurrency} at once{'; full pipeline' if args.full else ''}")
    print(f"{'requests':>10}{'RSS MiB':>9}{'req/s':>8}")
    print(f"{0:>10,}{_rss_mib(gateway.pid):9.0f}")
    try:
        done = 0
        while done < args.requests:
            started = time.perf_counter()
            uvloop.run(_send(url, body, key, step, args.concurrency))
            done += step
            print(f"{done:>10,}{_rss_mib(gateway.pid):9.0f}{step / (time.perf_counter() - started):8.0f}")
    finally:
        gateway.terminate()
        gateway.wait()
        stub.terminate()
        if receiver is not None:
            receiver.stop()


if __name__ == "__main__":
    main()
