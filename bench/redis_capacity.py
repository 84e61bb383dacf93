"""The capacity model: what one request costs Redis, and so how many requests a second and how
many replicas one Redis serves.

    python bench/redis_capacity.py [--seconds 10] [--concurrency 16] [--replicas 1,2]

Runs its own redis-server (so its counters are this run's alone), the stub upstream of
bench/overhead.py, and ccgate replicas on that Redis, in two modes: `routing` (auth open: the
prefix index, in-flight counts and slots) and `team` (plus team keys: the key lookup, the rpm/tpm
admission script, and usage accounting). Under load, it reads from Redis `INFO commandstats`
(calls and microseconds per command) and `INFO cpu` (the server's whole CPU, network I/O
included), and from each replica its round-trip counter; idle, what the replicas' heartbeats
cost. Per request it prints round trips, commands, Redis's time inside commands and its whole
CPU; from the whole CPU, the requests a second one Redis core serves at 100% and the number of
replicas that keep it at half that (each replica at the req/s it reached here). The ratio column
is the mode against `routing`, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bench.overhead as overhead  # noqa: E402


def start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (./scripts/test installs it)")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port).ping()
            return proc
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_totals(client: redis.Redis) -> tuple[int, int, dict[str, int]]:
    """Calls and microseconds inside commands, all commands (not INFO/CONFIG: the bench's own)."""
    stats = client.info("commandstats")
    own = {"cmdstat_info", "cmdstat_config", "cmdstat_config|resetstat", "cmdstat_ping"}
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if k not in own}
    usec = sum(int(v["usec"]) for k, v in stats.items() if k not in own)
    return sum(calls.values()), usec, calls


def round_trips(urls: list[str]) -> float:
    return sum(overhead._scrape(u, "ccgate_state_redis_round_trips_total") for u in urls)


async def load(urls: list[str], body: bytes, seconds: float, concurrency: int, key: str) -> list[float]:
    share = max(1, concurrency // len(urls))
    return list(await asyncio.gather(*(overhead._throughput(u, body, seconds, share, key) for u in urls)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each loaded run")
    parser.add_argument("--concurrency", type=int, default=16, help="clients at once, spread over the replicas")
    parser.add_argument("--replicas", default="1,2", help="comma list: replicas on the one Redis")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle heartbeats measured")
    args = parser.parse_args()

    port = overhead._free_port()
    server = start_redis(port)
    overhead.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis(port=port, decode_responses=True)
    stub, upstream = overhead.start_stub()
    body = overhead.dialect_bodies(overhead.json.loads(overhead.FIXTURE.read_text())["body"], "anthropic")["json"]
    tmp = Path(tempfile.mkdtemp())
    print(f"redis-server {client.info('server')['redis_version']} on its own; stub upstream; {args.seconds:g}s runs")
    head = f"{'mode':<10}{'replicas':>9}{'req/s':>8}{'trips/req':>10}{'cmds/req':>9}"
    head += f"{'cmd µs/req':>11}{'CPU µs/req':>11}{'ratio':>7}{'req/s/core':>11}{'replicas@50%':>13}"
    print(head)
    baseline: dict[int, float] = {}
    idle: list[str] = []
    mix: list[str] = []
    try:
        for mode in ("routing", "team"):
            for replicas in (int(r) for r in args.replicas.split(",")):
                auth = "keys" if mode == "team" else "open"
                prefix = f"capacity-{mode}-{replicas}:"  # the replicas of one team
                gateways = [
                    overhead._start_gateway("uvicorn", upstream, tmp, state="redis", auth=auth, prefix=prefix)
                    for _ in range(replicas)
                ]
                urls, key = [g[1] for g in gateways], gateways[0][2]
                try:
                    asyncio.run(load(urls, body, 1.0, args.concurrency, key))  # warm-up
                    if mode == "team" and replicas == max(int(r) for r in args.replicas.split(",")):
                        time.sleep(1.0)
                        client.config_resetstat()
                        cpu0 = redis_cpu(client)
                        time.sleep(args.idle)
                        calls, _, per = command_totals(client)
                        cpu = (redis_cpu(client) - cpu0) / args.idle
                        idle.append(
                            f"idle, {replicas} replicas: {calls / args.idle:.1f} commands/s "
                            f"({', '.join(f'{k} {v}' for k, v in sorted(per.items()))}), "
                            f"Redis CPU {cpu * 1e3:.2f} ms/s"
                        )
                    client.config_resetstat()
                    trips0, cpu0 = round_trips(urls), redis_cpu(client)
                    rates = asyncio.run(load(urls, body, args.seconds, args.concurrency, key))
                    answered = sum(rates) * args.seconds
                    calls, usec, per = command_totals(client)
                    mix.append(
                        f"{mode}, {replicas} replicas, per request: "
                        + ", ".join(
                            f"{name} {count / answered:.2f}"
                            for name, count in sorted(per.items(), key=lambda kv: -kv[1])
                        )
                    )
                    cpu_us = (redis_cpu(client) - cpu0) * 1e6 / answered
                    trips = (round_trips(urls) - trips0) / answered
                finally:
                    for proc, _, _ in gateways:
                        proc.terminate()
                        proc.wait(timeout=30)
                baseline.setdefault(replicas, cpu_us)
                per_core = 1e6 / cpu_us
                per_replica = sum(rates) / replicas
                print(
                    f"{mode:<10}{replicas:>9}{sum(rates):>8.0f}{trips:>10.2f}{calls / answered:>9.2f}"
                    f"{usec / answered:>11.1f}{cpu_us:>11.1f}{cpu_us / baseline[replicas]:>7.2f}"
                    f"{per_core:>11.0f}{per_core / 2 / per_replica:>13.1f}"
                )
        for line in mix + idle:
            print(line)
        if overhead.FAILED:
            print(f"not answered: {overhead.FAILED}")
    finally:
        stub.terminate()
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
