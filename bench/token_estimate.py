"""How far the byte-based token estimate is from a real tokenizer, on real Claude Code traffic.

    python bench/token_estimate.py

The prompts: the captured Claude Code requests (tests/fixtures), then the same conversation
with a tool result of indented source code, of prose and of digits appended (what a coding
agent reads all day). Each is estimated as ccgate does without a count (bytes / 3.8) and
counted by a llama-server running the real Gemma 3 270M (`/v1/messages/count_tokens`, its chat
template applied; Gemma's template leaves the tools out, which is most of Claude Code's first
request). Printed: bytes, estimate, count, the estimate's error, and what the count took (the
round trip ccgate adds to a request it counts). ccgate asks the
server to count when the estimate is within COUNT_NEAR of a local window (router/gateway.py),
so the error matters only to how wide that band must be.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.gateway import COUNT_NEAR  # noqa: E402
from router.protocol.estimate import estimate_input_tokens  # noqa: E402
from tests.harness.procs import real_model, start_llama  # noqa: E402

FIXTURES = sorted((ROOT / "tests" / "fixtures").glob("claude-code-request-*.json"))
SOURCE = (ROOT / "router" / "gateway.py").read_text()[:24_000]  # indented Python, as Read returns it
PROSE = "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))[:24_000]  # English prose
DIGITS = " ".join(str(7**i % 1_000_003) for i in range(4_000))[:24_000]


def with_tool_result(body: dict, text: str) -> dict:
    """The conversation with one more user turn: a tool result holding `text`."""
    out = copy.deepcopy(body)
    out["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "Reading it."}]})
    out["messages"].append({"role": "user", "content": [{"type": "text", "text": text}]})
    return out


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ccgate-bench-"))
    server = start_llama(real_model(), workdir, "-np", "1", "-c", "65536", "-t", "2")
    started = time.perf_counter()
    try:
        bodies: list[tuple[str, dict]] = []
        for path in FIXTURES:
            body = json.loads(path.read_text())["body"]
            bodies.append((path.stem.removeprefix("claude-code-request-"), body))
        base = bodies[0][1]
        for name, text in (("source code", SOURCE), ("prose (docs/)", PROSE), ("digits", DIGITS)):
            bodies.append((f"turn1 + 24 KB {name}", with_tool_result(base, text)))
        print(f"{'prompt':<34}{'bytes':>9}{'estimate':>10}{'Gemma':>8}{'error':>9}{'count ms':>10}")
        for name, body in bodies:
            size = len(msgspec.json.encode(body))
            estimate = estimate_input_tokens(body, size)
            timed = time.perf_counter()
            counted = httpx.post(server.url + "/v1/messages/count_tokens", json=body, timeout=120).json()
            took = (time.perf_counter() - timed) * 1000
            real = counted["input_tokens"]
            print(f"{name:<34}{size:>9}{estimate:>10}{real:>8}{(estimate - real) / real:>+9.0%}{took:>10.1f}")
        print(f"\nccgate counts when the estimate is within {COUNT_NEAR[0]}x to {COUNT_NEAR[1]}x of a local window.")
    finally:
        server.stop()
    print(f"(run took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
