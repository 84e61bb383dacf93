"""The runaway guard's false positives on real prose and code, and its cost per streamed token.

    python bench/runaway.py [--limit-mb 40] [--real [--max-tokens 1200]]

Every Python file of the standard library and every text document installed with the Python
packages (README, .md, .rst, .txt) is streamed through the guard as an answer would be: one
text delta per ~4 characters (a token), in 1 KB upstream reads. A file the guard stops is a
false positive: real text is never a runaway. The cost per token is measured on the same
streams against UsageTap, the usage scanner every reply already runs.

`--real` also runs the real loop: Claude Code's first request, greedy, to Gemma 3 270M on a
llama-server (the tests' real model), once straight to llama-server and once through ccgate with
the guard on, and prints the tokens generated and the seconds the slot was held by each.
"""

from __future__ import annotations

import argparse
import sysconfig
import time
from pathlib import Path

from router.protocol.runaway_stream import RunawayGuard, StopAnswer
from router.protocol.sse import encode_event
from router.protocol.usage import Usage, UsageTap

TEXT_SUFFIXES = (".md", ".rst", ".txt")


def corpus(limit: int) -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    packages = Path(sysconfig.get_paths()["purelib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    files += sorted(p for p in packages.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file())
    chosen, size = [], 0
    for path in files:
        size += path.stat().st_size
        if size > limit:
            break
        chosen.append(path)
    return chosen


def as_stream(text: str) -> list[bytes]:
    events = [encode_event("message_start", {"type": "message_start", "message": {"id": "m", "content": []}})]
    start = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    events.append(encode_event("content_block_start", start))
    for i in range(0, len(text), 4):
        delta = {"type": "text_delta", "text": text[i : i + 4]}
        events.append(encode_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    events.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    raw = b"".join(events)
    return [raw[i : i + 1024] for i in range(0, len(raw), 1024)]


def predicted(url: str) -> float:
    """llama-server's own count of the tokens it generated so far (/metrics)."""
    import httpx

    from router.backends.llama_probe import parse_metrics

    return parse_metrics(httpx.get(url + "/metrics").text).get("llamacpp:tokens_predicted_total", 0.0)


def real_loop(max_tokens: int) -> None:
    import json
    import tempfile

    import httpx
    import yaml

    from tests.harness.procs import real_model, start_gateway, start_llama

    root = Path(__file__).resolve().parents[1]
    body = json.loads((root / "tests" / "fixtures" / "claude-code-request-turn1.json").read_text())["body"]
    body = {**body, "stream": True, "max_tokens": max_tokens, "temperature": 0, "top_k": 1}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        llama = start_llama(real_model(), work, "-np", "1", "-c", "32768", "-t", "2", "--metrics")
        policy = work / "policy.yaml"
        policy.write_text(
            yaml.safe_dump(
                {
                    "backends": {"local": {"kind": "llamacpp", "url": llama.url}},
                    "rules": [{"name": "d", "to": ["local"]}],
                }
            )
        )
        gateway = start_gateway(policy, work)
        try:
            for name, url in (("llama-server alone", llama.url), ("through ccgate", gateway.url)):
                before = predicted(llama.url)
                started = time.perf_counter()
                with httpx.stream("POST", url + "/v1/messages", json=body, timeout=3600) as r:
                    for _ in r.iter_lines():
                        pass
                while any(s["is_processing"] for s in httpx.get(llama.url + "/slots").json()):
                    time.sleep(0.2)  # a bench, not a test: until the server is idle again
                held = time.perf_counter() - started
                print(f"{name:<20} tokens generated {predicted(llama.url) - before:>6.0f}   slot busy {held:6.1f} s")
        finally:
            gateway.stop()
            llama.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-mb", type=float, default=40.0, help="how much text to stream")
    parser.add_argument("--real", action="store_true", help="also run the real loop on Gemma 3 270M")
    parser.add_argument("--max-tokens", type=int, default=1200, help="max_tokens of the real loop's request")
    args = parser.parse_args()
    if args.real:
        real_loop(args.max_tokens)
    files = corpus(int(args.limit_mb * 1024 * 1024))
    stopped: list[tuple[Path, str]] = []
    tokens = 0
    guard_time = tap_time = 0.0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        tokens += -(-len(text) // 4)
        chunks = as_stream(text)
        started = time.perf_counter()
        guard = RunawayGuard()
        try:
            for chunk in chunks:
                guard.feed(chunk)
        except StopAnswer as stop:
            stopped.append((path, stop.detail))
        guard_time += time.perf_counter() - started
        started = time.perf_counter()
        tap = UsageTap(Usage())
        for chunk in chunks:
            tap.feed(chunk)
        tap_time += time.perf_counter() - started
    megabytes = sum(p.stat().st_size for p in files) / 1e6
    print(f"streamed {len(files)} files, {megabytes:.1f} MB, {tokens:,} tokens of ~4 characters")
    print(f"false positives: {len(stopped)} files ({len(stopped) / len(files):.3%})")
    for path, detail in stopped[:20]:
        print(f"  {path}: {detail}")
    per_token = guard_time / tokens * 1e6
    print(
        f"cost: guard {guard_time:.2f} s, UsageTap {tap_time:.2f} s ({guard_time / tap_time:.1f}x); "
        f"{per_token:.2f} µs per token = {per_token / 20_000:.3%} of a 20 ms token"
    )


if __name__ == "__main__":
    main()
