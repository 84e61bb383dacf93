"""What ccgate adds to a request: latency p50/p99 and requests/s, gateway vs direct, in one run.

    python bench/overhead.py [--requests 400] [--servers uvicorn,granian] [--upstream URL]
                             [--state memory,redis] [--auth open,keys]
                             [--dialects anthropic,chat,responses]

The upstream is, by default, a minimal HTTP/1.1 server in its own process that answers
`/v1/messages` at once with a fixed Anthropic reply (JSON, or SSE when the body asks to
stream), so the figures are the gateway's own cost rather than a model's. `--upstream` points
both legs at a real server instead (e.g. a llama-server). The body is the ~78 KB first request
Claude Code 2.1.197 sends (tests/fixtures), so parsing and forwarding it is part of the cost.
The baseline (direct) and the gateway are measured side by side in the same run; the ratio
line is what to compare across machines.

`--state redis` shares the routing state in Redis (REDIS_URL, default the local server);
`--auth keys` adds team keys and limits: each request carries a key whose rpm and tpm limits are
checked (one Redis script) and whose usage is recorded, so its row against `--auth open` on the
same state is what auth + limits cost per request. Keys need Redis: `keys` implies `redis`.

`--against CHECKOUT` also runs each gateway from another checkout of ccgate (a git worktree of
the commit to compare with), in the same run against the same direct baseline: on a shared
machine, whose speed drifts from minute to minute, that is the fair before/after.

`--full` turns every feature on at once, as a team runs it: routing state in Redis, team keys with
rpm and tpm limits and usage accounting, and spans exported (OTLP over HTTP, batch processor) to
a live receiver in its own process. Requests/s are measured at each `--concurrency` (default 8
and 64 clients) with a load generator that costs little CPU (ccgate's own HTTP client), since it
shares the machine's cores with the gateway and the stub. After the tables: each gateway's RSS
after all its requests, and its Redis round trips per request.

`--dialects chat,responses` sends the same conversation as OpenAI Chat Completions (Opencode's
dialect) or Responses (Codex CLI's) to ccgate's endpoints for them. Chat Completions goes to the
stub's /v1/chat/completions as sent (llama-server's own endpoint for that dialect; the stub
answers it with OpenAI chunks); Responses is converted and asks /v1/messages. The direct row is
the Anthropic request straight to the stub, so each row against `anthropic` is what that
dialect's path costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
FIXTURE = ROOT / "tests" / "fixtures" / "claude-code-request-turn1.json"

MESSAGE = json.dumps(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": "bench",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 20000, "output_tokens": 1},
    }
).encode()
EVENTS = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_bench","type":"message",'
    b'"role":"assistant","model":"bench","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":20000,"output_tokens":0}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"ok"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":1}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


CHUNKS = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench",'
    b'"choices":[{"index":0,"delta":{"role":"assistant","content":"ok"},"finish_reason":null}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench","choices":[],'
    b'"usage":{"prompt_tokens":20000,"completion_tokens":1,"total_tokens":20001}}\n\n'
    b"data: [DONE]\n\n"
)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            chat = b"/chat/completions" in head.split(b"\r\n", 1)[0]  # llama-server's other dialect
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if b'"stream":true' in body or b'"stream": true' in body:
                events = CHUNKS if chat else EVENTS
                chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(events), events)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" + chunk
                )
            else:
                payload = MESSAGE if body else b'{"status":"ok"}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(payload), payload)
                )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _serve_stub(port: int) -> None:
    async def main() -> None:
        server = await asyncio.start_server(_handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


class _Traces:
    """Answers OTLP/HTTP trace exports (POST /v1/traces) with 200 and counts them."""

    exports = None  # a multiprocessing.Value, set in the receiver process

    @staticmethod
    def serve(port: int, exports: Any) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                with exports.get_lock():
                    exports.value += 1
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


class OtlpReceiver:
    """A live OTLP receiver in its own process, so that span export is part of what is measured."""

    def __init__(self) -> None:
        port = _free_port()
        self.exports = multiprocessing.Value("i", 0)
        self.process = multiprocessing.Process(target=_Traces.serve, args=(port, self.exports), daemon=True)
        self.process.start()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.post(self.url + "/v1/traces", content=b"", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the OTLP receiver did not come up")

    def stop(self) -> None:
        self.process.terminate()


def start_stub(serve: Any = None) -> tuple[multiprocessing.Process, str]:
    """A stub upstream in its own process (`_serve_stub` unless another `serve(port)`), and its URL."""
    port = _free_port()
    stub = multiprocessing.Process(target=serve or _serve_stub, args=(port,), daemon=True)
    stub.start()
    url = f"http://127.0.0.1:{port}"
    _wait(url + "/health")
    return stub, url


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def _start_gateway(
    server: str,
    upstream: str,
    policy_dir: Path,
    guard: str = "on",
    state: str = "memory",
    auth: str = "open",
    otlp: str | None = None,
    workers: int = 1,
    checkout: str | None = None,
    prefix: str | None = None,
) -> tuple[subprocess.Popen[bytes], str, str]:
    """A gateway, its URL, and the key its requests carry ("bench" when auth is open). `otlp`:
    export spans there (batch processor, OTLP over HTTP). Gateways given one `prefix` are
    replicas of one team (its key is made again, and works on all of them)."""
    port = _free_port()
    policy = policy_dir / f"bench-{server}-{guard}-{state}-{auth}-{port}.yaml"
    prefix = prefix or f"bench-{port}:"
    policy.write_text(
        f"backends:\n  local: {{kind: llamacpp, url: '{upstream}', tool_guard: {guard}}}\n"
        "rules:\n  - {name: default, to: [local]}\n"
        f"state: {{key_prefix: '{prefix}'}}\n"
    )
    env = {**os.environ, "CCGATE_CONFIG": str(policy), "CCGATE_LOG_LEVEL": os.environ.get("CCGATE_LOG_LEVEL", "info")}
    env["CCGATE_METRICS_TOKEN"] = METRICS_TOKEN  # /metrics wants it in keys mode
    env.pop("REDIS_URL", None)
    for name in [n for n in env if n.startswith("OTEL_")]:
        env.pop(name)
    if otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    if workers > 1:
        env["CCGATE_WORKERS"] = str(workers)
    if checkout:  # the gateway of another checkout of ccgate (e.g. a git worktree of the last release)
        env["PYTHONPATH"] = checkout
    key = "bench"
    if state == "redis" or auth == "keys":
        env["REDIS_URL"] = REDIS_URL
    if auth == "keys":
        env["CCGATE_AUTH"] = "keys"
        key = asyncio.run(_make_key(prefix))
    if server == "uvicorn":
        cmd = [sys.executable, "-m", "router.cli", "serve", "--port", str(port)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-ws",
            "router.server.asgi:create",
        ]
    # `python -m` looks in its working directory first: run the checkout's own code there
    log = (policy_dir / f"gateway-{port}.log").open("w")  # kept: what a failed request left
    proc = subprocess.Popen(cmd, env=env, cwd=checkout, stdout=log, stderr=log)
    _wait(f"http://127.0.0.1:{port}/healthz")
    return proc, f"http://127.0.0.1:{port}", key


async def _make_key(prefix: str) -> str:
    """A key with limits high enough never to refuse: their checks run on every request."""
    import redis.asyncio as redis

    from router.policy.identity import Limits
    from router.state.keys import KeyStore

    client = redis.Redis.from_url(REDIS_URL)
    try:
        name = f"bench-{os.urandom(3).hex()}"  # replicas of one team each make theirs
        return await KeyStore(client, prefix).add(name, "bench", Limits(rpm=10**9, tpm=10**12))
    finally:
        await client.aclose()


PATHS = {"anthropic": "/v1/messages?beta=true", "chat": "/v1/chat/completions", "responses": "/v1/responses"}


def dialect_bodies(capture: dict, dialect: str) -> dict[str, bytes]:
    """The captured Claude Code request in one dialect, streamed and not."""
    from router.protocol.anthropic import MessagesRequest, validate
    from router.protocol.to_openai import to_openai_request

    if dialect == "anthropic":
        whole = capture
    else:
        whole = to_openai_request(validate({**capture, "stream": False}, MessagesRequest), capture["model"])
        if dialect == "responses":
            whole = _as_responses(whole)
    streamed = {**whole, "stream": True}
    if dialect == "chat":
        streamed["stream_options"] = {"include_usage": True}
    return {"stream": json.dumps(streamed).encode(), "json": json.dumps({**whole, "stream": False}).encode()}


def _as_responses(chat: dict) -> dict:
    items: list[dict] = []
    instructions = "\n".join(m["content"] for m in chat["messages"] if m["role"] == "system")
    for m in chat["messages"]:
        if m["role"] in ("user", "assistant"):
            kind = "input_text" if m["role"] == "user" else "output_text"
            parts = m["content"] if isinstance(m["content"], list) else [{"text": m["content"] or ""}]
            content = [{"type": kind, "text": p.get("text", "")} for p in parts]
            items.append({"type": "message", "role": m["role"], "content": content})
    tools = [{"type": "function", **t["function"]} for t in chat.get("tools", [])]
    return {"model": chat["model"], "instructions": instructions, "input": items, "tools": tools, "store": False}


def latency(
    base: str, body: bytes, n: int, stream: bool, key: str = "bench", path: str = PATHS["anthropic"]
) -> list[float]:
    headers = {"content-type": "application/json", "anthropic-version": "2023-06-01", "x-api-key": key}
    samples: list[float] = []
    with httpx.Client(timeout=30) as client:
        for i in range(n + 20):
            start = time.perf_counter()
            if stream:
                with client.stream("POST", base + path, content=body, headers=headers) as r:
                    for _ in r.iter_raw():
                        pass
            else:
                r = client.post(base + path, content=body, headers=headers)
            elapsed = time.perf_counter() - start
            assert r.status_code == 200, r.status_code
            if i >= 20:  # warm-up: connections, caches
                samples.append(elapsed)
    return samples


async def _throughput(
    base: str, body: bytes, seconds: float, concurrency: int, key: str = "bench", path: str = "/v1/messages"
) -> float:
    """Answers (200) a second with `concurrency` clients at once; the others are counted in
    FAILED. The load generator is aiohttp (as ccgate's own upstream client): httpx's ~0.8 ms of
    CPU a request would cap it below what the gateway serves, on the same 2 cores."""
    import aiohttp

    headers = {"content-type": "application/json", "x-api-key": key}
    done = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with client.post(path, data=body, headers=headers) as response:
                    async for _ in response.content.iter_any():
                        pass
                if response.status == 200:
                    done += 1
                else:
                    FAILED[response.status] = FAILED.get(response.status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


METRICS_TOKEN = "bench-metrics-token"  # what the benches' gateways take for /metrics
FAILED: dict[int, int] = {}  # status -> count, of the throughput runs' requests that were not answered


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _rss_mib(pid: int) -> float:
    """RSS of a process and its children (a supervisor's workers), in MiB."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) / 1024
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else ():
        total += _rss_mib(int(child))
    return total


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children (a supervisor's workers) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else ():
        total += _cpu_seconds(int(child))
    return total


def _scrape(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run")
    parser.add_argument("--concurrency", default="8,64", help="comma list: clients at once for req/s")
    parser.add_argument("--servers", default="uvicorn", help="comma list: uvicorn, granian")
    parser.add_argument("--upstream", help="a real upstream URL instead of the built-in stub")
    parser.add_argument("--tool-guard", default="on", help="comma list: on, off (the tool-call guard; default on)")
    parser.add_argument("--state", default="memory", help="comma list: memory, redis (REDIS_URL) for routing state")
    parser.add_argument("--auth", default="open", help="comma list: open, keys (team keys + limits; needs Redis)")
    parser.add_argument("--dialects", default="anthropic", help="comma list: anthropic, chat, responses")
    parser.add_argument(
        "--full", action="store_true", help="every feature on: Redis state, team keys + limits, OTLP export (live)"
    )
    parser.add_argument("--workers", default="1", help="comma list: gateway worker processes (CCGATE_WORKERS)")
    parser.add_argument(
        "--against", metavar="CHECKOUT", help="also run each gateway from this checkout (e.g. a worktree of main)"
    )
    args = parser.parse_args()
    if args.full:
        args.state, args.auth = "redis", "keys"
    concurrency = [int(c) for c in args.concurrency.split(",")]

    capture = json.loads(FIXTURE.read_text())["body"]
    dialects = args.dialects.split(",")
    by_dialect = {d: dialect_bodies(capture, d) for d in dialects}
    bodies = dialect_bodies(capture, "anthropic")
    stub = None
    upstream = args.upstream
    if upstream is None:
        stub, upstream = start_stub()
    receiver = OtlpReceiver() if args.full else None

    print(
        f"body: {len(bodies['stream']) / 1024:.0f} KB Claude Code request; upstream: {args.upstream or 'stub'}"
        + ("; full pipeline: Redis state, team keys + limits, OTLP export to a live receiver" if args.full else "")
    )
    rates = "".join(f"{f'req/s@{c}':>11}{'ratio':>7}" for c in concurrency) + f"{'CPU ms/req':>12}"
    print(f"{'path':<34}{'mode':<8}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}{rates}")
    tmp = Path(tempfile.mkdtemp())
    guards, states, auths = args.tool_guard.split(","), args.state.split(","), args.auth.split(",")
    workers = [int(w) for w in args.workers.split(",")]
    checkouts = [None, args.against] if args.against else [None]
    variants = [
        (s, g, st, a, w, c)
        for c in checkouts
        for s in args.servers.split(",")
        for g in guards
        for st in states
        for a in auths
        for w in workers
        if not (a == "keys" and st == "memory")  # keys live in Redis
    ]

    def label(server: str, guard: str, state: str, auth: str, worker: int, checkout: str | None) -> str:
        parts = [server] if checkout is None else [f"{server} @{Path(checkout).name}"]
        parts += [f"guard {guard}"] if len(guards) > 1 else []
        parts += [state] if len(states) > 1 else []
        parts += [auth] if len(auths) > 1 else []
        parts += [f"{worker} workers"] if len(workers) > 1 else []
        return " ".join(parts)

    gateways = {
        label(*v): _start_gateway(v[0], upstream, tmp, v[1], v[2], v[3], receiver.url if receiver else None, v[4], v[5])
        for v in variants
    }
    rows = [(name, gw, d) for name, gw in gateways.items() for d in dialects]
    trips = "ccgate_state_redis_round_trips_total"
    trips_before = {name: _scrape(url, trips) for name, (_, url, _) in gateways.items()}
    sent = dict.fromkeys(gateways, 0)
    refused: dict[str, str] = {}
    try:
        for mode, body in bodies.items():
            direct = latency(upstream, body, args.requests, mode == "stream")
            direct_rps = (
                [uvloop.run(_throughput(upstream, bodies["json"], args.seconds, c)) for c in concurrency]
                if mode == "json"
                else []
            )
            columns = "".join(f"{r:11.0f}{'':>7}" for r in direct_rps)
            print(f"{'direct':<34}{mode:<8}{pct(direct, 0.5):9.2f}{pct(direct, 0.99):9.2f}{'':>11}{'':>11}{columns}")
            for name, (_, url, key), dialect in rows:
                shown = f"{name} {dialect}" if len(dialects) > 1 else name
                body = by_dialect[dialect][mode]
                path = PATHS[dialect]
                via = latency(url, body, args.requests, mode == "stream", key, path)
                sent[name] += len(via) + 20
                added50 = statistics.median(via) * 1000 - statistics.median(direct) * 1000
                added99 = pct(via, 0.99) - pct(direct, 0.99)
                columns = ""
                proc = gateways[name][0]
                cpu_before, done_before = _cpu_seconds(proc.pid), sent[name]
                for c, base_rps in zip(concurrency, direct_rps, strict=False):
                    FAILED.clear()
                    rps = uvloop.run(_throughput(url, body, args.seconds, c, key, path.split("?")[0]))
                    if FAILED:
                        refused[name] = f"{refused.get(name, '')} {c} clients: {dict(FAILED)} not answered;"
                    sent[name] += int(rps * args.seconds)
                    columns += f"{rps:11.0f}{rps / base_rps:7.2f}"
                if direct_rps:  # the gateway's own CPU per request: steadier than latency on a shared machine
                    cpu = (_cpu_seconds(proc.pid) - cpu_before) / max(1, sent[name] - done_before) * 1000
                    columns += f"{cpu:12.2f}"
                print(
                    f"{'ccgate/' + shown:<34}{mode:<8}{pct(via, 0.5):9.2f}{pct(via, 0.99):9.2f}"
                    f"{added50:11.2f}{added99:11.2f}{columns}"
                )
        print()
        for name, (proc, url, _) in gateways.items():
            made = _scrape(url, trips) - trips_before[name]
            line = f"{'ccgate/' + name:<34}~{sent[name]:,} requests; RSS {_rss_mib(proc.pid):.0f} MiB"
            if made:
                line += f"; Redis round trips per request {made / sent[name]:.2f} (all purposes, heartbeats included)"
            if name in refused:
                line += f"; NOT ANSWERED (status: count):{refused[name]}"
            print(line)
        if receiver is not None:
            print(f"OTLP exports received by the live receiver: {receiver.exports.value}")
    finally:
        for proc, _, _ in gateways.values():
            proc.terminate()
            proc.wait()
        if stub is not None:
            stub.terminate()
        if receiver is not None:
            receiver.stop()


if __name__ == "__main__":
    main()
