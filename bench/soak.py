"""A soak under faults: every request gets exactly one well-formed answer while things break.

    python bench/soak.py [--seconds 600] [--concurrency 64]

Two ccgate replicas share a real Redis, in front of two scripted llama-servers (a pool) and the
Anthropic stand-in as the fallback. Clients send mixed traffic to a replica picked at random, as
a load balancer would (a refused connection is re-sent to the other one): Anthropic Messages
streamed and not, with tools and without, Chat Completions, Responses, count_tokens, and some
clients that hang up mid-stream. Meanwhile, on a schedule: a llama-server is SIGKILLed and
restarted, the other is stopped (SIGSTOP) and resumed, Redis is restarted, the policy file is
replaced by an invalid one and then by a valid one, and one replica is restarted (SIGTERM, which
drains it). Prints requests sent, answered by backend, failed by cause (a stream cut after its
first byte is the one failure no gateway can cover), p50/p99, each replica's RSS, open fds and
asyncio tasks at start and end, and llama-server slots still busy at the end.

tests/integration/test_soak.py runs a 60-second version and asserts the accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import scripted_model  # noqa: E402
from tests.harness.procs import Process, free_port, start_gateway, start_llama, start_redis  # noqa: E402

READ = {
    "name": "Read",
    "description": "Read a file.",
    "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
}
CHAT_READ = {"type": "function", "function": {"name": "Read", "parameters": READ["input_schema"]}}
ENDS = {"anthropic": "message_stop", "chat": "[DONE]", "responses": "response.completed"}
KINDS = (  # (name, weight)
    ("messages", 3),
    ("messages-stream", 4),
    ("messages-text-stream", 2),
    ("chat", 2),
    ("chat-stream", 2),
    ("responses-stream", 2),
    ("count_tokens", 1),
    ("hangup", 1),
)


@dataclass
class Stack:
    redis: Process
    llamas: list[Process]
    standin: Process
    replicas: list[Process]
    policy: Path
    valid_policy: str


@dataclass
class Report:
    sent: int = 0
    answered: Counter = field(default_factory=Counter)  # backend → count
    failed: Counter = field(default_factory=Counter)  # cause → count
    hung_up: int = 0  # clients that left mid-stream on purpose
    rerouted: int = 0  # connections refused by a replica being restarted, re-sent to the other
    latencies: list[float] = field(default_factory=list)
    processes: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # name → what → (start, end)
    busy_slots: int = 0
    events: list[str] = field(default_factory=list)

    @property
    def failures(self) -> int:
        """Failures other than the uncoverable one (a stream cut after its first byte)."""
        return sum(n for cause, n in self.failed.items() if cause != "cut after the first byte")

    def print(self) -> None:
        print(f"requests sent {self.sent}, hung up on purpose {self.hung_up}, re-sent by the balancer {self.rerouted}")
        print("answered by   " + ", ".join(f"{b} {n}" for b, n in sorted(self.answered.items())))
        print("failed        " + (", ".join(f"{c}: {n}" for c, n in self.failed.most_common()) or "none"))
        if self.latencies:
            ordered = sorted(self.latencies)
            p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
            print(f"latency       p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
        for name, figures in self.processes.items():
            said = ", ".join(f"{what} {a:g} → {b:g}" for what, (a, b) in figures.items())
            print(f"{name:<13} {said}")
        print(f"busy slots at the end: {self.busy_slots}")
        for event in self.events:
            print(f"  {event}")


def start_stack(work: Path, logs: Path) -> Stack:
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    tool = scripted_model.build(scripted_model.SCRIPTS["tool"], models / "tool.gguf")
    redis = start_redis(logs)
    llamas = [start_llama(tool, logs, "-np", "4", "--metrics", "--slots") for _ in range(2)]
    port = free_port()
    standin_args = [sys.executable, "-m", "tests.harness.anthropic_standin", "--port", str(port)]
    standin = Process(f"standin-{port}", standin_args, port, logs / f"standin-{port}.log").start("/_requests")
    policy = {
        "backends": {
            "local1": {"kind": "llamacpp", "url": llamas[0].url, "timeouts": {"first_byte": 5}},
            "local2": {"kind": "llamacpp", "url": llamas[1].url, "timeouts": {"first_byte": 5}},
            "cloud": {"kind": "anthropic", "url": standin.url, "api_key": "sk-ant-soak"},
        },
        "rules": [{"name": "default", "to": [["local1", "local2"], "cloud"]}],
        "state": {"key_prefix": f"soak-{port}:"},
    }
    path = work / "policy.yaml"
    valid = yaml.safe_dump(policy, sort_keys=False)
    path.write_text(valid)
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
        "CCGATE_SHUTDOWN_GRACE": "20",
        "CCGATE_LOG_LEVEL": "warning",
        "CCGATE_HEALTH_INTERVAL": "0.5",
    }
    replicas = [start_gateway(path, logs, env) for _ in range(2)]
    return Stack(redis, llamas, standin, replicas, path, valid)


def body_of(kind: str) -> tuple[str, str, dict]:
    """(dialect, path, body) for one kind of request."""
    user = [{"role": "user", "content": f"read a.txt ({random.random():.6f})"}]
    if kind in ("messages", "messages-stream", "hangup"):
        return (
            "anthropic",
            "/v1/messages",
            {"model": "m", "max_tokens": 64, "tools": [READ], "messages": user, "stream": kind != "messages"},
        )
    if kind == "messages-text-stream":
        return "anthropic", "/v1/messages", {"model": "m", "max_tokens": 64, "messages": user, "stream": True}
    if kind == "count_tokens":
        return "anthropic", "/v1/messages/count_tokens", {"model": "m", "tools": [READ], "messages": user}
    if kind in ("chat", "chat-stream"):
        return (
            "chat",
            "/v1/chat/completions",
            {"model": "m", "max_tokens": 64, "messages": user, "tools": [CHAT_READ], "stream": kind == "chat-stream"},
        )
    tool = {"type": "function", "name": "Read", "parameters": READ["input_schema"]}
    return (
        "responses",
        "/v1/responses",
        {"model": "m", "input": user[0]["content"], "tools": [tool], "stream": True, "store": False},
    )


def whole_ok(dialect: str, path: str, answer: dict) -> bool:
    if path.endswith("count_tokens"):
        return isinstance(answer.get("input_tokens"), int)
    if dialect == "anthropic":
        return answer.get("type") == "message" and isinstance(answer.get("content"), list)
    return answer.get("object") == "chat.completion"


async def one_request(
    client: httpx.AsyncClient, stack: Stack, report: Report, kind: str, ready: dict[int, bool]
) -> None:
    dialect, path, body = body_of(kind)
    order = random.sample(stack.replicas, 2)
    order.sort(key=lambda replica: not ready.get(replica.port, True))  # the balancer's health check
    report.sent += 1
    started = time.perf_counter()
    for attempt, replica in enumerate(order):
        try:
            if not body.get("stream"):
                r = await client.post(replica.url + path, json=body)
                if r.status_code == 200 and whole_ok(dialect, path, r.json()):
                    report.answered[r.headers.get("x-ccgate-backend", "?")] += 1
                    report.latencies.append(time.perf_counter() - started)
                else:
                    report.failed[f"{path} HTTP {r.status_code}: {r.text[:80]}"] += 1
                return
            async with client.stream("POST", replica.url + path, json=body) as r:
                if r.status_code != 200:
                    report.failed[f"{path} stream HTTP {r.status_code}: {(await r.aread())[:80]!r}"] += 1
                    return
                last = ""
                async for line in r.aiter_lines():
                    if kind == "hangup" and line.startswith("event: "):
                        report.hung_up += 1
                        return  # leaving the `with` closes the connection mid-stream
                    if line.startswith(("event: ", "data: [DONE]")):
                        last = line.removeprefix("event: ").removeprefix("data: ")
                if last == ENDS[dialect]:
                    report.answered[r.headers.get("x-ccgate-backend", "?")] += 1
                    report.latencies.append(time.perf_counter() - started)
                else:
                    report.failed["cut after the first byte"] += 1
                return
        except httpx.ConnectError:
            if attempt == 0:
                report.rerouted += 1
                continue  # what a load balancer does with a replica that refuses connections
            report.failed["both replicas refused the connection"] += 1
            return
        except httpx.HTTPError as exc:
            report.failed[
                f"{type(exc).__name__} after the answer started" if body.get("stream") else type(exc).__name__
            ] += 1
            return


async def load(stack: Stack, report: Report, seconds: float, concurrency: int) -> None:
    names = [k for k, w in KINDS for _ in range(w)]
    deadline = time.monotonic() + seconds
    ready: dict[int, bool] = {}

    async def health_check() -> None:
        """A load balancer's: a replica whose /readyz is not 200 gets no new requests."""
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                for replica in stack.replicas:
                    try:
                        ready[replica.port] = (await client.get(replica.url + "/readyz")).status_code == 200
                    except httpx.HTTPError:
                        ready[replica.port] = False
                await asyncio.sleep(0.25)

    async def client_loop() -> None:
        async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=5)) as client:
            while time.monotonic() < deadline:
                await one_request(client, stack, report, random.choice(names), ready)

    await asyncio.gather(health_check(), *(client_loop() for _ in range(concurrency)))


async def faults(stack: Stack, report: Report, seconds: float) -> None:
    """The schedule, as fractions of the run."""
    started = time.monotonic()

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, started + fraction * seconds - time.monotonic()))

    def say(what: str) -> None:
        report.events.append(f"{time.monotonic() - started:6.1f} s  {what}")

    await at(0.10)
    say("llama-server 1: SIGKILL")
    stack.llamas[0].kill()
    await at(0.15)
    await asyncio.to_thread(stack.llamas[0].start, "/health")
    say("llama-server 1: restarted")
    await at(0.25)
    stack.llamas[1].proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
    say("llama-server 2: SIGSTOP")
    await asyncio.sleep(min(20.0, 0.2 * seconds))
    stack.llamas[1].proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    say("llama-server 2: SIGCONT")
    await at(0.50)
    stack.redis.stop()
    stack.redis.launch()
    await asyncio.to_thread(_wait_port, stack.redis.port)
    say("Redis: restarted")
    await at(0.60)
    stack.policy.write_text("rules: [this is not a policy\n")
    say("policy: replaced by an invalid one")
    await at(0.65)
    stack.policy.write_text(stack.valid_policy + "# valid again\n")
    say("policy: valid again")
    await at(0.75)
    replica = stack.replicas[1]
    replica.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    say("replica 2: SIGTERM (draining)")
    await asyncio.to_thread(replica.proc.wait, 60)  # type: ignore[union-attr]
    await asyncio.to_thread(replica.start, "/healthz")
    say("replica 2: restarted")


def _wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def figures(proc: Process) -> dict[str, float]:
    """RSS (MiB), open fds, and (for ccgate) asyncio tasks, of a running process."""
    assert proc.proc is not None
    pid = proc.proc.pid
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024
    out = {"RSS MiB": round(rss, 1), "fds": float(len(list(Path(f"/proc/{pid}/fd").iterdir())))}
    if "ccgate" in proc.name:
        text = httpx.get(proc.url + "/metrics", timeout=10).text
        out["tasks"] = next(
            float(line.split()[1]) for line in text.splitlines() if line.startswith("ccgate_event_loop_tasks ")
        )
    return out


def busy_slots(stack: Stack, within: float = 30.0) -> int:
    """Slots still processing once the load is over (waits a little for the last to finish)."""
    deadline = time.monotonic() + within
    while True:
        busy = sum(
            s["is_processing"] for llama in stack.llamas for s in httpx.get(llama.url + "/slots", timeout=10).json()
        )
        if busy == 0 or time.monotonic() > deadline:
            return busy
        time.sleep(0.5)


def run(seconds: float, concurrency: int, work: Path) -> Report:
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = start_stack(work, logs)
    report = Report()
    watched = {"replica 1": stack.replicas[0], "llama 2": stack.llamas[1], "redis": stack.redis}
    try:
        before = {name: figures(proc) for name, proc in watched.items()}

        async def both() -> None:
            await asyncio.gather(load(stack, report, seconds, concurrency), faults(stack, report, seconds))

        asyncio.run(both())
        report.busy_slots = busy_slots(stack)
        time.sleep(1.0)  # let the last connections close before counting fds and tasks
        after = {name: figures(proc) for name, proc in watched.items()}
        after_replica2 = figures(stack.replicas[1])
        for name in watched:
            report.processes[name] = {what: (before[name][what], after[name][what]) for what in before[name]}
        report.processes["replica 2*"] = {what: (value, value) for what, value in after_replica2.items()}
    finally:
        for proc in [*stack.replicas, *stack.llamas, stack.standin, stack.redis]:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGCONT)
            proc.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    report = run(args.seconds, args.concurrency, Path(tempfile.mkdtemp(prefix="ccgate-soak-")))
    report.print()
    print("(replica 2*: after its restart)")
    sys.exit(1 if report.failures or report.busy_slots else 0)


if __name__ == "__main__":
    main()
