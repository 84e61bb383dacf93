"""Prefix-affinity routing vs round-robin vs least-busy, on real llama-servers, in one run.

    python bench/prefix_affinity.py [--turns 5] [--scenarios 4,8]

Two llama-servers with two slots each (`--cache-ram 0`: a real model's KV cache, ~100 KB a token,
leaves no host memory to park other sessions' prompts; the scripted model's tiny one would hide
the effect) run the scripted `text` model the tests build. Simulated Claude Code sessions come
from a real captured Claude Code request, each with its own working directory in the system
prompt and its own billing-header value; every turn appends the answer and a new user message,
and each turn the sessions go in a shuffled order.

Modes, each on fresh servers:
- files: affinity (below) on servers started with `--slot-save-path`: a prefix is saved before
  its slot goes to another session and restored when the session returns (slot_files);
- affinity: two ccgate replicas sharing Redis (turns alternate between them), `pick: affinity`,
  on servers without `--slot-save-path`;
- round_robin and least_busy: one ccgate, the pool picked that way, llama-server choosing the slot.

Reported per mode: prompt tokens llama.cpp processed and served from cache
(`llamacpp:prompt_tokens_total`, `llamacpp:prompt_tokens_cached_total`), p50/p95 time to the
first byte, and the ratio to the limit: every prompt token of every session processed once.
Scenario 4 sessions = one per slot; 8 sessions = slots must be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import scripted_model  # noqa: E402
from tests.harness.procs import Process, start_gateway, start_llama, start_redis  # noqa: E402
from tests.harness.sessions import first_turn, next_turn  # noqa: E402

ANSWER = scripted_model.TEXT_REPLY
MODES = ("files", "affinity", "round_robin", "least_busy")


def llama_counts(servers: list[Process]) -> tuple[float, float]:
    processed = cached = 0.0
    for server in servers:
        for line in httpx.get(server.url + "/metrics", timeout=5).text.splitlines():
            name, _, number = line.partition(" ")
            if name == "llamacpp:prompt_tokens_total":
                processed += float(number)
            elif name == "llamacpp:prompt_tokens_cached_total":
                cached += float(number)
    return processed, cached


def ask(gateway: Process, body: dict) -> tuple[float, int]:
    """Time to the first byte, and the prompt's total tokens (processed + cached)."""
    started = time.perf_counter()
    first = None
    tokens = 0
    with httpx.stream("POST", gateway.url + "/v1/messages", json=body, timeout=900) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None:
                first = time.perf_counter() - started
            if line.startswith("data: ") and '"message_start"' in line:
                usage = json.loads(line[6:])["message"]["usage"]
                tokens = usage.get("input_tokens", 0) + usage.get("cache_read_input_tokens", 0)
    return first or 0.0, tokens


def run_mode(mode: str, sessions: int, turns: int, model: Path, workdir: Path, redis_url: str, seed: int) -> dict:
    flags = ["-np", "2", "--cache-ram", "0", "--metrics", "--slots"]
    servers = []
    for _ in range(2):
        saved = ["--slot-save-path", tempfile.mkdtemp(prefix="slots-", dir=workdir) + "/"] if mode == "files" else []
        servers.append(start_llama(model, workdir, *flags, *saved))
    gateways: list[Process] = []
    try:
        policy = {
            "backends": {name: {"kind": "llamacpp", "url": s.url} for name, s in zip(("a", "b"), servers, strict=True)},
            "rules": [{"name": "default", "to": [["a", "b"]], "pick": "affinity" if mode == "files" else mode}],
            "state": {"key_prefix": f"bench-{secrets.token_hex(4)}:"},
        }
        path = workdir / f"policy-{mode}-{sessions}.yaml"
        path.write_text(yaml.safe_dump(policy))
        env = {"CCGATE_LOG_LEVEL": "warning", "CCGATE_HEALTH_INTERVAL": "0.5"}
        if mode in ("affinity", "files"):
            gateways = [start_gateway(path, workdir, {**env, "REDIS_URL": redis_url}) for _ in range(2)]
        else:
            gateways = [start_gateway(path, workdir, env)]
        rng = random.Random(seed)
        names = [f"s{i}-{secrets.token_hex(2)}" for i in range(sessions)]
        bodies = {name: first_turn(name, max_tokens=8, stream=True) for name in names}
        last_tokens: dict[str, int] = {}
        ttfb: list[float] = []
        before = llama_counts(servers)
        sent = 0
        for turn in range(turns):
            order = names[:]
            rng.shuffle(order)
            for name in order:
                first, tokens = ask(gateways[sent % len(gateways)], bodies[name])
                sent += 1
                ttfb.append(first)
                last_tokens[name] = tokens
                bodies[name] = next_turn(bodies[name], ANSWER, turn + 1)
        after = llama_counts(servers)
        return {
            "processed": after[0] - before[0],
            "cached": after[1] - before[1],
            "limit": sum(last_tokens.values()),
            "p50": statistics.median(ttfb),
            "p95": sorted(ttfb)[max(0, round(0.95 * len(ttfb)) - 1)],
        }
    finally:
        for proc in gateways + servers:
            proc.stop()


def redis_for(workdir: Path) -> tuple[str, Process | None]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=0.5):
            return url, None
    except OSError:
        proc = start_redis(workdir)
        return f"redis://127.0.0.1:{proc.port}/0", proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--scenarios", default="4,8", help="comma list of session counts")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ccgate-bench-"))
    model = scripted_model.build(scripted_model.SCRIPTS["text"], workdir / "text.gguf")
    redis_url, redis_proc = redis_for(workdir)
    started = time.perf_counter()
    try:
        for sessions in (int(n) for n in args.scenarios.split(",")):
            print(f"\n{sessions} sessions x {args.turns} turns, 2 llama-servers x 2 slots (--cache-ram 0)")
            header = (
                f"{'mode':<13}{'processed':>11}{'cached':>11}{'limit':>10}{'x limit':>9}{'p50 TTFB s':>12}{'p95 s':>8}"
            )
            print(header)
            results = {}
            for mode in args.modes.split(","):
                r = results[mode] = run_mode(mode, sessions, args.turns, model, workdir, redis_url, args.seed)
                print(
                    f"{mode:<13}{r['processed']:>11.0f}{r['cached']:>11.0f}{r['limit']:>10}"
                    f"{r['processed'] / r['limit']:>8.2f}x{r['p50']:>12.2f}{r['p95']:>8.2f}"
                )
            for better, baseline in (("affinity", "round_robin"), ("files", "affinity")):
                if better in results and baseline in results:
                    b, a = results[better], results[baseline]
                    print(
                        f"{better} vs {baseline}: {a['processed'] / b['processed']:.1f}x fewer tokens processed, "
                        f"{a['p50'] / b['p50']:.1f}x lower p50 TTFB"
                    )
    finally:
        if redis_proc is not None:
            redis_proc.stop()
    print(f"\n(run took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
