"""Where a gateway's time goes: py-spy samples one ccgate process under bench/overhead.py's load.

    python bench/profile.py [--mode json|stream] [--seconds 20] [--concurrency 1]
                            [--state memory|redis] [--auth open|keys] [--otlp] [--out bench/profiles]

Writes `<out>/<name>.folded` (collapsed stacks: flamegraph.pl or speedscope.app draw them; `--svg`
also writes the flame graph itself) and `<out>/<name>.txt`: the share of the gateway's
busy samples spent under each part (inclusive: a sample counts for every part on its stack) and
the 25 functions with the most samples of their own. py-spy is a tool, not a dependency:
`pip install py-spy`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.overhead import (  # noqa: E402
    FIXTURE,
    OtlpReceiver,
    _start_gateway,
    _throughput,
    dialect_bodies,
    latency,
    start_stub,
)

# Parts of the stack, by the file a frame is in. A sample belongs to the innermost frame that
# matches a part (so "litestar" is Litestar's own code, not the handler it calls).
PARTS = (
    ("httpx/httpcore/h11 (upstream client)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("uvicorn + httptools (server)", ("uvicorn/", "router/server/http_limits.py")),
    ("litestar", ("litestar/",)),
    ("redis-py", ("redis/",)),
    ("opentelemetry", ("opentelemetry/",)),
    ("prometheus_client", ("prometheus_client/",)),
    ("logging", ("logging/", "router/telemetry/logs.py")),
    ("json (msgspec) + request parsing", ("router/protocol/anthropic.py", "router/api/dialects.py")),
    ("prefix hashing", ("router/policy/prefix.py",)),
    ("tool guard + SSE", ("router/protocol/tool_", "router/protocol/sse.py", "router/backends/tool_")),
    ("policy", ("router/policy/",)),
    ("state (in-flight, index, limits)", ("router/state/",)),
    ("ccgate, the rest", ("router/",)),
    ("asyncio / uvloop", ("asyncio/", "uvloop/")),
)


def part_of(frame: str) -> str | None:
    for name, needles in PARTS:
        if any(needle in frame for needle in needles):
            return name
    return None


def part_shares(collapsed: str) -> tuple[int, Counter[str], Counter[str]]:
    """Total samples, samples per part (innermost matching frame), and self samples per function."""
    total = 0
    parts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        part = next((p for p in map(part_of, reversed(frames)) if p is not None), "other")
        parts[part] += n
        own[frames[-1]] += n
    return total, parts, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default="json", choices=("json", "stream"))
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--state", default="memory", choices=("memory", "redis"))
    parser.add_argument("--auth", default="open", choices=("open", "keys"))
    parser.add_argument("--otlp", action="store_true", help="export spans to a live OTLP receiver")
    parser.add_argument("--dialect", default="anthropic", choices=("anthropic", "chat", "responses"))
    parser.add_argument("--tokens", type=int, help="a conversation of this size (bench/prompt_size.py's)")
    parser.add_argument("--svg", action="store_true", help="also write a flame graph (a second py-spy)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "profiles"))
    args = parser.parse_args()
    # beside the interpreter that runs this (a venv not activated has it there, not on PATH)
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        sys.exit(f"py-spy is not installed: {sys.executable} -m pip install py-spy")

    capture = json.loads(FIXTURE.read_text())["body"]
    if args.tokens:
        from bench.prompt_size import conversation

        capture = conversation(args.tokens)
    body = dialect_bodies(capture, args.dialect)[args.mode]
    stub, upstream = start_stub()
    receiver = OtlpReceiver() if args.otlp else None
    tmp = Path(tempfile.mkdtemp())
    gateway, url, key = _start_gateway(
        "uvicorn", upstream, tmp, state=args.state, auth=args.auth, otlp=receiver.url if receiver else None
    )
    name = f"{args.dialect}-{args.mode}-{args.state}-{args.auth}{'-otlp' if args.otlp else ''}-c{args.concurrency}"
    name += f"-{args.tokens // 1000}k" if args.tokens else ""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = tmp / "raw.txt"
    path = {"anthropic": "/v1/messages", "chat": "/v1/chat/completions", "responses": "/v1/responses"}[args.dialect]
    try:
        latency(url, body, 50, args.mode == "stream", key, path)  # warm
        spy = [
            found, "record", "--pid", str(gateway.pid), "--rate", "500",
            "--duration", str(int(args.seconds)),
        ]  # fmt: skip
        spies = [subprocess.Popen([*spy, "--format", "raw", "-o", str(raw)])]
        if args.svg:  # a second sampler: both cost the machine, so only when asked
            spies.append(subprocess.Popen([*spy, "--format", "flamegraph", "-o", str(out / f"{name}.svg")]))
        deadline = time.monotonic() + args.seconds
        sent = 0
        while time.monotonic() < deadline:
            if args.concurrency > 1:
                rate = asyncio.run(_throughput(url, body, 2.0, args.concurrency, key, path))
                sent += int(rate * 2)
            else:
                sent += len(latency(url, body, 100, args.mode == "stream", key, path)) + 20
        for spy_process in spies:
            spy_process.wait()
    finally:
        gateway.terminate()
        gateway.wait()
        stub.terminate()
        if receiver is not None:
            receiver.stop()
    folded = raw.read_text(errors="replace")
    (out / f"{name}.folded").write_text(folded)
    total, parts, own = part_shares(folded)
    lines = [f"{name}: {sent} requests, {total} samples of the gateway process (idle frames excluded)", ""]
    lines += [f"{share / total:6.1%}  {part}" for part, share in parts.most_common()]
    lines += ["", "most samples of their own:"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(25)]
    (out / f"{name}.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
