"""What a longer conversation costs the gateway: added latency at 20k, 100k and 200k tokens.

    python bench/prompt_size.py [--requests 200] [--sizes 20000,100000,200000]

Each conversation is Claude Code's captured first turn grown by Read tool calls and their
results (source-like text) until it holds about that many tokens; its prefix is known to the
gateway (the conversation was sent once before). The stub upstream answers at once, so the rows
are the gateway's own cost, direct and through ccgate in the same run (non-streamed answers).
The second table splits the size-dependent part in process: decoding the body, validating it,
and hashing the prompt for the prefix index.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import FIXTURE, _start_gateway, latency, start_stub  # noqa: E402
from router.policy.prefix import hashed  # noqa: E402
from router.protocol.anthropic import MessagesRequest, decode_body, validate  # noqa: E402
from router.protocol.estimate import estimate_input_tokens  # noqa: E402

LINE = "    def handle_{n}(self, request: Request) -> Response:  # route {n}: validates, then answers\n"


def conversation(tokens: int) -> dict:
    """Claude Code's first turn, grown by Read calls and results to about `tokens` tokens."""
    body = json.loads(FIXTURE.read_text())["body"]
    body = {**body, "stream": False, "messages": list(body["messages"])}
    turn = 0
    while estimate_input_tokens(body) < tokens:
        turn += 1
        call = f"toolu_bench_{turn:05d}"
        text = "".join(LINE.format(n=turn * 1000 + i) for i in range(60))
        body["messages"] += [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": f"Reading part {turn}."},
                    {"type": "tool_use", "id": call, "name": "Read", "input": {"file_path": f"/src/app{turn}.py"}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call, "content": text}]},
        ]
    return body


def per_call_us(work: Callable[[], object], n: int = 50) -> float:
    work()
    started = time.perf_counter()
    for _ in range(n):
        work()
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--sizes", default="20000,100000,200000")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    bodies = {size: json.dumps(conversation(size), separators=(",", ":")).encode() for size in sizes}

    stub, upstream = start_stub()
    gateway, url, key = _start_gateway("uvicorn", upstream, Path(tempfile.mkdtemp()))
    print("conversation grown from Claude Code's first turn; prefix known; stub upstream, non-streamed")
    print(f"{'tokens':>8}{'body KB':>9}{'direct p50':>12}{'ccgate p50':>12}{'added p50':>11}{'x 20k':>7}")
    added: dict[int, float] = {}
    try:
        for size, body in bodies.items():
            latency(url, body, 5, False, key)  # the conversation so far: now its prefix is known
            direct = statistics.median(latency(upstream, body, args.requests, False)) * 1000
            via = statistics.median(latency(url, body, args.requests, False, key)) * 1000
            added[size] = via - direct
            print(
                f"{size:>8}{len(body) / 1024:9.0f}{direct:12.2f}{via:12.2f}{added[size]:11.2f}"
                f"{added[size] / added[sizes[0]]:7.2f}"
            )
    finally:
        gateway.terminate()
        gateway.wait()
        stub.terminate()

    print()
    print("in process, µs per request (the parts whose cost grows with the body)")
    print(f"{'tokens':>8}{'decode':>9}{'validate':>10}{'prefix hashes':>15}")
    for size, body in bodies.items():
        raw = decode_body(body)
        print(
            f"{size:>8}{per_call_us(lambda b=body: decode_body(b)):9.0f}"
            f"{per_call_us(lambda r=raw: validate(r, MessagesRequest)):10.0f}"
            f"{per_call_us(lambda b=body: hashed(b)):15.0f}"
        )


if __name__ == "__main__":
    main()
