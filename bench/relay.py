"""How fast ccgate relays a stream: tokens (SSE delta events) per second, one stream and many.

    python bench/relay.py [--tokens 10000] [--streams 1,64]

A stub upstream streams an Anthropic answer of `--tokens` text deltas, each event in its own
HTTP chunk as llama-server sends them, as fast as the socket takes them. The client reads the
stream and counts deltas; direct (stub to client) and through ccgate (tool guard and runaway
guard on, as for a llamacpp backend) are measured in the same run. With N streams at once, the
figure is the sum over all of them, and per stream. "x 200 tok/s" is the headroom against a fast
local model: how many such streams the gateway could relay at once before it slows one down.
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

from bench.overhead import _start_gateway, start_stub  # noqa: E402

NEEDLE = b'"content_block_delta"'
MODEL_RATE = 200  # tokens/s of a fast local model: what the headroom is measured against
START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_relay","type":"message",'
    b'"role":"assistant","model":"bench","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":10,"output_tokens":0}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
)
END = (
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":%d}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
WORDS = [b" the", b" gateway", b" relays", b" each", b" token", b" as", b" it", b" comes", b" in", b"."]


def _delta(i: int) -> bytes:
    return (
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"text_delta","text":"' + WORDS[i % len(WORDS)] + b'%d"}}\n\n' % i
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")), 0
            )
            body = await reader.readexactly(length) if length else b""
            if not body:  # health probes
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n" + b'{"status":"ok"}')
                continue
            tokens = json.loads(body).get("max_tokens", 100)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(_chunk(START))
            for i in range(tokens):
                writer.write(_chunk(_delta(i)))
                if i % 32 == 31:
                    await writer.drain()
            writer.write(_chunk(END % tokens) + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _serve(port: int) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


async def _relay(url: str, tokens: int, streams: int) -> tuple[float, float]:
    """Deltas per second over all streams, and the slowest stream's."""
    body = json.dumps(
        {"model": "bench", "max_tokens": tokens, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    ).encode()
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": "bench"}
    connector = aiohttp.TCPConnector(limit=streams)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as client:

        async def one() -> float:
            started = time.perf_counter()
            seen, tail = 0, b""
            async with client.post("/v1/messages", data=body, headers=headers) as response:
                async for part in response.content.iter_any():
                    window = tail + part  # an event name may be cut between two reads
                    seen += window.count(NEEDLE)
                    tail = window[-len(NEEDLE) + 1 :]
            assert response.status == 200 and seen == tokens, (response.status, seen)
            return tokens / (time.perf_counter() - started)

        await one()  # warm
        started = time.perf_counter()
        rates = await asyncio.gather(*(one() for _ in range(streams)))
        return tokens * streams / (time.perf_counter() - started), min(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tokens", type=int, default=10000, help="deltas per stream (a llamacpp backend caps max_tokens at 16384)"
    )
    parser.add_argument("--streams", default="1,64", help="comma list: streams at once")
    args = parser.parse_args()
    stub, upstream = start_stub(_serve)
    gateway, url, _ = _start_gateway("uvicorn", upstream, Path(tempfile.mkdtemp()))
    print(f"{args.tokens} text deltas a stream, each in its own chunk; stub upstream")
    print(f"{'path':<10}{'streams':>8}{'tokens/s':>12}{'slowest stream':>16}{'ratio':>8}{'x 200 tok/s':>13}")
    try:
        for streams in (int(n) for n in args.streams.split(",")):
            tokens = max(500, args.tokens // streams) if streams > 1 else args.tokens
            direct, direct_slowest = uvloop.run(_relay(upstream, tokens, streams))
            via, slowest = uvloop.run(_relay(url, tokens, streams))
            print(f"{'direct':<10}{streams:>8}{direct:12.0f}{direct_slowest:16.0f}")
            print(f"{'ccgate':<10}{streams:>8}{via:12.0f}{slowest:16.0f}{via / direct:8.2f}{via / MODEL_RATE:13.0f}")
    finally:
        gateway.terminate()
        gateway.wait()
        stub.terminate()


if __name__ == "__main__":
    main()
