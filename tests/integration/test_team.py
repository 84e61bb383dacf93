"""Team keys, limits, fair share and usage, with real processes: two ccgate replicas sharing a
real Redis, scripted llama-servers, the Anthropic stand-in as the cloud, the `ccgate keys` CLI."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from tests.harness.procs import Process, start_redis
from tests.harness.team import ADMIN_TOKEN
from tests.harness.wait import wait_until
from tests.integration.test_claude_cli import run_claude
from tests.integration.test_metrics import metrics_headers, scrape, total, value
from tests.integration.test_passthrough import ask

ANTHROPIC = {"anthropic-version": "2023-06-01"}  # what tells /v1/models an Anthropic client asks
HAIKU_TO_CLOUD = {
    "rules": [{"name": "cloud", "when": {"model": "*haiku*"}, "to": ["cloud"]}, {"name": "d", "to": ["local"]}]
}


def error_of(r: httpx.Response) -> tuple[int, str, str]:
    body = r.json()
    assert body["type"] == "error", body
    return r.status_code, body["error"]["type"], body["error"]["message"]


def hold(gw: Process, key: str, started: threading.Event, stop: threading.Event, out: dict | None = None) -> None:
    """A streamed request that keeps its slot (the `busy` model writes until max_tokens) until `stop`."""
    body = {**ask(), "stream": True, "max_tokens": 100_000}
    with (
        suppress(httpx.HTTPError),
        httpx.stream("POST", gw.url + "/v1/messages", json=body, headers={"x-api-key": key}, timeout=120) as r,
    ):
        if out is not None:
            out.update(status=r.status_code, backend=r.headers.get("x-ccgate-backend"))
        for _ in r.iter_bytes():
            started.set()
            if stop.is_set():
                return
    started.set()


@pytest.fixture
def holders():
    """Start held requests in threads; every one is let go when the test ends."""
    stops: list[threading.Event] = []
    threads: list[threading.Thread] = []

    def start(gw: Process, key: str, out: dict | None = None) -> threading.Event:
        started, stop = threading.Event(), threading.Event()
        stops.append(stop)
        thread = threading.Thread(target=hold, args=(gw, key, started, stop, out), daemon=True)
        threads.append(thread)
        thread.start()
        assert started.wait(60), "the held request never got its first byte"
        return stop

    yield start
    for stop in stops:
        stop.set()
    for thread in threads:
        thread.join(timeout=60)


def test_keys_from_each_header_and_every_refusal_in_anthropic_shape(
    make_team, tool_llama: Process, standin: Process
) -> None:
    team = make_team(
        {"local": {"kind": "llamacpp", "url": tool_llama.url}, "cloud": {"kind": "anthropic", "url": standin.url}},
        extra=HAIKU_TO_CLOUD,
    )
    key = team.add_key("alice", "core")
    sent = {
        "x-api-key": {"x-api-key": key},
        "bearer": {"authorization": f"Bearer {key}"},
        "x-ccgate-key": {"x-ccgate-key": key},
    }
    for i, headers in enumerate(sent.values()):
        r = team.post(None, replica=i % 2, **headers)
        assert r.status_code == 200, r.text
        assert r.headers["x-ccgate-backend"] == "local"

    # The developer's own Anthropic credentials go on to the cloud; the team key never does, in
    # whichever headers and however many it comes.
    own = {"x-ccgate-key": key, "x-api-key": "sk-ant-own-" + secrets.token_hex(8)}
    r = team.post(None, {**ask(), "model": "claude-haiku-4-5"}, **own)
    assert r.status_code == 200 and r.headers["x-ccgate-backend"] == "cloud", r.text
    both = {"x-ccgate-key": key, "authorization": f"Bearer {key}", "x-api-key": own["x-api-key"]}
    r = team.post(None, {**ask(), "model": "claude-haiku-4-5"}, replica=1, **both)
    assert r.status_code == 200 and r.headers["x-ccgate-backend"] == "cloud", r.text
    # With the team key its only credential, the cloud (no api_key of its own) would get none:
    # the person is told what to set, instead of the cloud's 401 that Claude Code retries silently
    r = team.post(key, {**ask(), "model": "claude-haiku-4-5"}, replica=1)
    status, kind, message = error_of(r)
    assert (status, kind) == (403, "permission_error") and "backend cloud has no api_key" in message, message
    assert "x-ccgate-key" in message and r.headers["x-should-retry"] == "false"
    upstream = httpx.get(standin.url + "/_headers", timeout=10).json()
    assert [h.get("x-api-key") for h in upstream] == [own["x-api-key"]] * 2
    assert [h.get("authorization") for h in upstream] == [None, None]
    assert key not in json.dumps(upstream)
    warnings = httpx.get(team.replicas[0].url + "/readyz", timeout=10).json()["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("backend cloud has no api_key"), warnings
    assert "backend cloud has no api_key" in team.replicas[0].log.read_text()

    # Refusals are 403 with x-should-retry: false, which every agent shows at once (a 401 is
    # retried silently by Claude Code for minutes)
    missing_r = team.post(None)
    missing = error_of(missing_r)
    assert missing[:2] == (403, "permission_error") and "needs a team key" in missing[2]
    assert missing_r.headers["x-should-retry"] == "false"
    stranger = "ccg-" + secrets.token_urlsafe(32)
    r = team.post(stranger, replica=1)
    assert error_of(r)[:2] == (403, "permission_error") and stranger not in r.text
    assert "unknown" in error_of(r)[2]
    not_ours = team.post(None, **{"authorization": "Bearer sk-ant-somebody-else"})
    assert error_of(not_ours)[:2] == (403, "permission_error")  # no team key in it at all
    for path, method in (("/v1/models", "GET"), ("/v1/messages/count_tokens", "POST")):
        r = httpx.request(method, team.replicas[0].url + path, json=ask(), headers=ANTHROPIC, timeout=30)
        assert error_of(r)[:2] == (403, "permission_error"), path
        ok = httpx.request(method, team.replicas[0].url + path, json=ask(), headers={"x-api-key": key}, timeout=30)
        assert ok.status_code == 200, (path, ok.text)
    openai_shaped = httpx.get(team.replicas[0].url + "/v1/models", timeout=30)  # no anthropic-version
    assert openai_shaped.status_code == 403 and openai_shaped.json()["error"]["type"] == "permission_error"

    # Revoked on the CLI: the other replica refuses it within a second of the revocation.
    assert team.post(key, replica=1).status_code == 200  # replica 1 has the key in its cache now
    done = team.cli("keys", "revoke", "alice")
    assert done.returncode == 0, done.stderr
    revoked_at = time.monotonic()
    accepted_late: list[float] = []

    def refused() -> bool:
        sent_at = time.monotonic() - revoked_at
        r = team.post(key, replica=1)
        if r.status_code == 200:
            accepted_late.append(sent_at)
            return False
        status, kind, message = error_of(r)
        assert (status, kind) == (403, "permission_error") and "'alice' was revoked" in message
        assert key not in r.text
        return True

    wait_until(refused, "replica 1 refuses the revoked key", every=0.05)
    assert not [t for t in accepted_late if t >= 1.0], accepted_late

    samples = scrape(team.replicas[1])
    assert total(samples, "ccgate_requests_total", outcome="unauthorized") == 2  # the stranger, the revoked


def test_admin_needs_the_admin_token_and_manages_keys(make_team, text_llama: Process) -> None:
    team = make_team({"local": {"kind": "llamacpp", "url": text_llama.url}})
    key = team.add_key("alice", "core", "--rpm", "100")
    admin = team.replicas[0].url + "/admin"
    for headers in ({}, {"x-api-key": key}, {"authorization": f"Bearer {key}"}, {"authorization": "Bearer nope"}):
        r = httpx.get(admin + "/keys", headers=headers, timeout=10)
        assert error_of(r)[:2] == (401, "authentication_error"), headers
        r = httpx.post(admin + "/explain", json=ask(), headers=headers, timeout=10)
        assert r.status_code == 401, headers
    token = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    listed = httpx.get(admin + "/keys", headers=token, timeout=10).json()["keys"]
    assert [(k["name"], k["team"], k["limits"]) for k in listed] == [("alice", "core", {"rpm": 100})]
    assert "hash" not in listed[0] and key not in json.dumps(listed)

    made = httpx.post(admin + "/keys", json={"name": "bob", "team": "web"}, headers=token, timeout=10)
    assert made.status_code == 201, made.text
    bob = made.json()["key"]
    assert team.post(bob, replica=1).status_code == 200  # the other replica knows it at once
    wrong = httpx.post(
        admin + "/keys", json={"name": "eve", "team": "x", "limits": {"backends": ["gpu9"]}}, headers=token, timeout=10
    )
    assert error_of(wrong)[:2] == (400, "invalid_request_error") and "gpu9" in error_of(wrong)[2]
    again = httpx.post(admin + "/keys", json={"name": "bob", "team": "web"}, headers=token, timeout=10)
    assert again.status_code == 400 and "exists" in again.text
    gone = httpx.delete(admin + "/keys/bob", headers=token, timeout=10)
    assert gone.status_code == 200 and gone.json()["revoked"]
    assert httpx.delete(admin + "/keys/nobody", headers=token, timeout=10).status_code == 404
    assert wait_until(lambda: team.post(bob).status_code == 403, "bob's key refused")

    usage = httpx.get(admin + "/usage", params={"by": "team"}, headers=token, timeout=10)
    assert usage.status_code == 200, usage.text
    assert {row["team"] for row in usage.json()["usage"]} == {"web"}
    bad = httpx.get(admin + "/usage", params={"by": "person"}, headers=token, timeout=10)
    assert bad.status_code == 400
    assert httpx.post(admin + "/explain", json=ask(), headers=token, timeout=10).status_code == 200

    listing = team.cli("keys", "list")
    assert listing.returncode == 0 and "alice" in listing.stdout and "revoked" in listing.stdout
    assert key not in listing.stdout and bob not in listing.stdout
    unknown_backend = team.cli("keys", "add", "carol", "--team", "x", "--backends", "gpu9")
    assert unknown_backend.returncode == 2 and "gpu9" in unknown_backend.stderr and not unknown_backend.stdout


def test_the_cli_without_a_policy_file_reads_the_one_the_gateways_published(
    make_team, text_llama: Process, logdir: Path
) -> None:
    """From another shell, no --config and no CCGATE_CONFIG: `keys add --backends` checks the
    names against the policy the gateways on that Redis run (the built-in one has others), and
    `usage` prices with its prices."""
    redis = start_redis(logdir)  # its own: the default key prefix, as a team's would be
    try:
        url = f"redis://127.0.0.1:{redis.port}/0"
        prices = {"prices": {"claude-*": {"input": 3.0, "output": 15.0}}, "state": {"key_prefix": "ccgate:"}}
        team = make_team({"gpu": {"kind": "llamacpp", "url": text_llama.url}}, extra=prices, env={"REDIS_URL": url})
        env = {k: v for k, v in os.environ.items() if k != "CCGATE_CONFIG"} | {"REDIS_URL": url}

        def bare(*args: str) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "router.cli", *args]
            return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

        made = bare("keys", "add", "dave", "--team", "x", "--backends", "gpu")
        assert made.returncode == 0, made.stderr
        refused = bare("keys", "add", "erin", "--team", "x", "--backends", "local")  # the built-in's name
        assert refused.returncode == 2 and "the policy the gateways on this Redis run" in refused.stderr
        key = made.stdout.splitlines()[-1]
        assert team.post(key).status_code == 200
        wait_until(lambda: "dave" in bare("usage").stdout, "the answer counted in usage")
        assert "no cloud cost" not in bare("usage").stdout
    finally:
        redis.stop()


def test_requests_per_minute_hold_exactly_across_two_replicas(make_team, text_llama: Process) -> None:
    # 20 at once on a 2-slot box: the ones admitted that find it busy go to the "cloud".
    team = make_team(
        {
            "local": {"kind": "llamacpp", "url": text_llama.url},
            "cloud": {"kind": "anthropic", "url": text_llama.url, "api_key": "sk-ant-team"},
        }
    )
    key = team.add_key("alice", "core", "--rpm", "10")
    other = team.add_key("bob", "core")
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda i: team.post(key, {**ask(), "max_tokens": 8}, replica=i % 2), range(20)))
    assert sorted(r.status_code for r in replies) == [200] * 10 + [429] * 10
    for r in (r for r in replies if r.status_code == 429):
        assert error_of(r)[:2] == (429, "rate_limit_error")
        assert "10 requests per minute" in error_of(r)[2]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.headers["anthropic-ratelimit-requests-limit"] == "10"
        assert r.headers["anthropic-ratelimit-requests-remaining"] == "0"
        reset = datetime.fromisoformat(r.headers["anthropic-ratelimit-requests-reset"].replace("Z", "+00:00"))
        assert reset.tzinfo is not None and r.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        wait = (reset - datetime.now(UTC)).total_seconds()
        assert abs(wait - int(r.headers["retry-after"])) <= 2, (wait, r.headers["retry-after"])
    assert team.post(other).status_code == 200  # one key's limit is not its teammate's
    limited = sum(value(scrape(gw), "ccgate_limited_total", team="core", limit="requests") for gw in team.replicas)
    assert limited == 10


def test_tokens_per_minute_hold_across_two_replicas(make_team, text_llama: Process) -> None:
    team = make_team({"local": {"kind": "llamacpp", "url": text_llama.url}})
    probe = team.add_key("probe", "core")
    body = {**ask(), "max_tokens": 8}
    usage = team.post(probe, body).json()["usage"]
    per_request = usage["input_tokens"] + usage.get("cache_read_input_tokens", 0) + usage["output_tokens"]
    key = team.add_key("alice", "core", "--tpm", str(3 * per_request))
    statuses = [team.post(key, body, replica=i % 2).status_code for i in range(3)]
    assert statuses == [200, 200, 200]
    # an answer's tokens are written behind it (batched): they count once written
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}

    def logged() -> bool:
        rows = httpx.get(team.replicas[0].url + "/admin/usage", params={"by": "key"}, headers=admin, timeout=10)
        alice = [r for r in rows.json()["usage"] if r["key"] == "alice"]
        return bool(alice) and alice[0]["input"] + alice[0]["cached"] + alice[0]["output"] >= 3 * per_request

    wait_until(logged, "the three answers' tokens are written")
    over = team.post(key, body, replica=1)
    status, kind, message = error_of(over)
    assert (status, kind) == (429, "rate_limit_error") and "tokens per minute" in message
    assert over.headers["anthropic-ratelimit-tokens-limit"] == str(3 * per_request)
    assert over.headers["anthropic-ratelimit-tokens-remaining"] == "0"
    assert 1 <= int(over.headers["retry-after"]) <= 60


def test_a_key_over_its_local_share_falls_back_while_a_teammate_gets_the_free_slot(
    make_team, start_llama_server, text_llama: Process, holders
) -> None:
    box = start_llama_server("busy", "-np", "2", "--slots", "--metrics")
    team = make_team(
        {
            "local": {"kind": "llamacpp", "url": box.url},
            "cloud": {"kind": "anthropic", "url": text_llama.url, "api_key": "sk-ant-team"},
        }
    )
    alice = team.add_key("alice", "core", "--local-share", "1")
    bob = team.add_key("bob", "core")
    first: dict = {}
    holders(team.replicas[0], alice, first)
    assert first["backend"] == "local"
    wait_until(
        lambda: value(scrape(team.replicas[1]), "ccgate_backend_queue_depth", backend="local") == 1,
        "replica 1 sees alice's request on the box (Redis)",
    )
    small = {**ask(), "max_tokens": 4}
    second = team.post(alice, small, replica=1)  # her sub-agent, on the other replica
    assert second.status_code == 200 and second.headers["x-ccgate-backend"] == "cloud", second.text
    assert "key alice has 1/1 of the local box" in second.headers["x-ccgate-fallback-reason"]
    teammate = team.post(bob, small, replica=1)
    assert teammate.status_code == 200 and teammate.headers["x-ccgate-backend"] == "local", teammate.text
    assert total(scrape(team.replicas[1]), "ccgate_fallbacks_total", reason="share") == 1


def test_when_busy_wait_gets_the_slot_in_arrival_order_and_gives_up_with_529(
    make_team, start_llama_server, text_llama: Process, holders
) -> None:
    box = start_llama_server("busy", "-np", "1", "--slots", "--metrics")
    team = make_team(
        {"local": {"kind": "llamacpp", "url": box.url}, "cloud": {"kind": "anthropic", "url": text_llama.url}}
    )
    holder = team.add_key("holder", "core")
    first = team.add_key("w1", "core", "--when-busy", "wait", "--wait-seconds", "300")
    second = team.add_key("w2", "core", "--when-busy", "wait", "--wait-seconds", "300")
    impatient = team.add_key("w3", "core", "--when-busy", "wait", "--wait-seconds", "1")
    rejecting = team.add_key("r", "core", "--when-busy", "reject")

    stop = holders(team.replicas[0], holder)
    for gw in team.replicas:
        wait_until(lambda gw=gw: value(scrape(gw), "ccgate_backend_queue_depth", backend="local") == 1, "box busy")
    small = {**ask(), "max_tokens": 4}
    r = team.post(rejecting, small, replica=1)
    assert error_of(r)[:2] == (529, "overloaded_error") and "when_busy: reject" in error_of(r)[2]
    r = team.post(impatient, small, replica=1)
    status, kind, message = error_of(r)
    assert (status, kind) == (529, "overloaded_error") and "waited 1s for a free slot on local" in message

    finished: list[str] = []
    results: dict[str, httpx.Response] = {}

    def wait_in_line(name: str, key: str, replica: int) -> None:
        results[name] = team.post(key, small, replica=replica)
        finished.append(name)

    waiters = [threading.Thread(target=wait_in_line, args=("w1", first, 0))]
    waiters[0].start()
    wait_until(lambda: value(scrape(team.replicas[0]), "ccgate_queue_waiting", backend="local") == 1, "w1 waits")
    waiters.append(threading.Thread(target=wait_in_line, args=("w2", second, 1)))
    waiters[1].start()
    wait_until(lambda: value(scrape(team.replicas[1]), "ccgate_queue_waiting", backend="local") == 1, "w2 waits")
    assert not finished  # both are still waiting: nothing went to the cloud
    stop.set()  # the holder is done: the slot frees
    for thread in waiters:
        thread.join(timeout=120)
    assert finished == ["w1", "w2"]  # first come, first served, across the replicas
    for name in ("w1", "w2"):
        assert results[name].status_code == 200 and results[name].headers["x-ccgate-backend"] == "local"
    waits = value(scrape(team.replicas[0]), "ccgate_queue_wait_seconds_count", backend="local")
    assert waits == 1
    assert value(scrape(team.replicas[1]), "ccgate_queue_wait_seconds_count", backend="local") == 2  # w3 and w2


def test_a_local_only_key_never_reaches_the_cloud(make_team, start_llama_server, standin: Process, holders) -> None:
    box = start_llama_server("busy", "-np", "1", "--slots", "--metrics")
    team = make_team(
        {"local": {"kind": "llamacpp", "url": box.url}, "cloud": {"kind": "anthropic", "url": standin.url}},
        extra={
            "rules": [
                {"name": "quick", "when": {"model": "*haiku*"}, "to": ["cloud"]},
                {"name": "default", "to": ["local", "cloud"]},
            ]
        },
    )
    private = team.add_key("contractor", "outside", "--backends", "local")
    small = {**ask(), "model": "claude-sonnet-4-5", "max_tokens": 4}
    assert team.post(private, small).headers["x-ccgate-backend"] == "local"
    r = team.post(private, {**small, "model": "claude-haiku-4-5"})  # its rule names only the cloud
    status, kind, message = error_of(r)
    assert (status, kind) == (403, "permission_error") and "may not use" in message
    assert "cloud: not for key contractor" in r.headers["x-ccgate-fallback-reason"]

    holders(team.replicas[0], team.add_key("holder", "core"))
    wait_until(lambda: value(scrape(team.replicas[1]), "ccgate_backend_queue_depth", backend="local") == 1, "box busy")
    r = team.post(private, small, replica=1)  # the box is busy: no fallback for this key
    assert error_of(r)[:2] == (529, "overloaded_error")
    assert "cloud: not for key contractor" in r.headers["x-ccgate-fallback-reason"]
    assert httpx.get(standin.url + "/_requests", timeout=10).json() == []


@pytest.mark.cli
def test_claude_code_with_a_team_key(make_team, tool_llama: Process, tmp_path: Path, standin: Process) -> None:
    team = make_team(
        {"local": {"kind": "llamacpp", "url": tool_llama.url}, "cloud": {"kind": "anthropic", "url": standin.url}},
        extra={"rules": [{"name": "d", "to": ["local"]}]},
        replicas=1,
    )
    key = team.add_key("alice", "core")
    [gw] = team.replicas
    done = run_claude(gw, tmp_path / "token", "--output-format", "json", env={"ANTHROPIC_AUTH_TOKEN": key})
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    assert json.loads(done.stdout)["result"] == "The file a.txt says hi."

    custom = {"ANTHROPIC_AUTH_TOKEN": "sk-ant-own-token", "ANTHROPIC_CUSTOM_HEADERS": f"x-ccgate-key: {key}"}
    done = run_claude(gw, tmp_path / "custom", "--output-format", "json", env=custom)
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    assert json.loads(done.stdout)["result"] == "The file a.txt says hi."

    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}

    def usage() -> list[dict]:
        rows = httpx.get(gw.url + "/admin/usage", headers=admin, timeout=10).json()["usage"]
        # two runs of two turns, each with Claude Code's prompt of 15k+ tokens
        return rows if rows and rows[0]["input"] + rows[0]["cached"] > 4 * 15_000 else []

    [row] = wait_until(usage, "both runs' usage is recorded")
    assert row["key"] == "alice" and row["local_share"] == 1.0


def test_usage_equals_what_llama_server_counted(make_team, start_llama_server) -> None:
    box = start_llama_server("text", "-np", "2", "--metrics")
    prices = {"*": {"input": 2.0, "cached": 0.5, "output": 10.0}}  # matches the local model too
    team = make_team({"local": {"kind": "llamacpp", "url": box.url}}, extra={"prices": prices})
    keys = {name: team.add_key(name, team_name) for name, team_name in (("alice", "core"), ("bob", "web"))}
    for i in range(6):
        name = ("alice", "bob")[i % 2]
        body = {**ask([{"role": "user", "content": f"question {i}: " + "why " * (10 * i)}]), "max_tokens": 16}
        if i % 3 == 0:
            body["stream"] = True
        r = team.post(keys[name], body, replica=i % 2)
        assert r.status_code == 200, r.text

    def counters() -> dict[str, float]:
        text = httpx.get(box.url + "/metrics", timeout=10).text
        return {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line.startswith(("llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total"))
        }

    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}

    def by(column: str) -> dict[str, dict]:
        rows = httpx.get(team.replicas[1].url + "/admin/usage", params={"by": column}, headers=admin, timeout=10)
        return {row[column]: row for row in rows.json()["usage"]}

    llama = counters()

    def matches() -> dict | None:  # streamed answers are counted as their stream closes
        [local] = by("backend").values()
        return local if local["output"] == llama["llamacpp:tokens_predicted_total"] else None

    local = wait_until(matches, "the usage of all six answers is recorded")
    assert local["input"] == llama["llamacpp:prompt_tokens_total"]  # what it processed; the rest was cached
    assert local["cost_usd"] is None  # the team's own box is free, whatever `prices:` says of its model
    teams = by("team")
    assert set(teams) == {"core", "web"}
    assert sum(t["input"] + t["output"] for t in teams.values()) == local["input"] + local["output"]
    report = team.cli("usage", "--by", "team", "--json")
    assert report.returncode == 0, report.stderr
    assert {row["team"]: row["output"] for row in json.loads(report.stdout)["usage"]} == {
        name: row["output"] for name, row in teams.items()
    }
    table = team.cli("usage", "--since", "1d")
    assert table.returncode == 0 and "alice" in table.stdout and "bob" in table.stdout, table.stdout
    samples = scrape(team.replicas[0])
    assert total(samples, "ccgate_team_tokens_total", kind="output") > 0
    assert not any("alice" in str(labels) for _, labels in samples)  # a team label, never a key


def test_no_key_reaches_a_log_a_span_a_metric_or_an_error(
    make_team, start_llama_server, standin: Process, logdir: Path
) -> None:
    """Everything the gateway prints and exports, searched for every secret it was given or shown."""
    exported: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            exported.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    receiver = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    upstream_key = "sk-ant-upstream-" + secrets.token_hex(16)
    box = start_llama_server("text", "-np", "2")
    team = make_team(
        {
            "local": {"kind": "llamacpp", "url": box.url},
            "cloud": {"kind": "anthropic", "url": standin.url, "api_key": upstream_key},
        },
        extra=HAIKU_TO_CLOUD,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_port}",
            "CCGATE_LOG_LEVEL": "debug",
        },
    )
    alice = team.add_key("alice", "core", "--rpm", "3")
    gone = team.add_key("gone", "core")
    assert team.cli("keys", "revoke", "gone").returncode == 0
    stranger = "ccg-" + secrets.token_urlsafe(32)
    answers: list[httpx.Response] = []
    try:
        answers += [team.post(alice), team.post(alice, {**ask(), "model": "claude-haiku-4-5", "stream": True})]
        answers += [team.post(alice, replica=1, **{"authorization": f"Bearer {alice}"})]
        answers += [team.post(alice, replica=1)]  # over its rpm: 429
        answers += [team.post(gone), team.post(stranger), team.post(None, **{"x-ccgate-key": stranger})]
        answers += [team.post(None, **{"authorization": f"Bearer {stranger}"})]
        bob = team.add_key("bob", "core")  # the OpenAI dialects, as Opencode and Codex send keys

        def openai(path: str, body: dict, key: str) -> httpx.Response:
            url = team.replicas[0].url + path
            return httpx.post(url, json=body, headers={"authorization": f"Bearer {key}"}, timeout=60)

        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        answers += [
            openai("/v1/chat/completions", chat, bob),
            openai("/v1/chat/completions", {**chat, "model": "claude-haiku-4-5", "stream": True}, bob),
            openai("/v1/responses", {"model": "m", "input": "hi", "stream": True}, bob),
            openai("/v1/chat/completions", chat, stranger),
        ]
        for headers in ({"authorization": f"Bearer {alice}"}, {"authorization": f"Bearer {ADMIN_TOKEN}x"}):
            answers.append(httpx.get(team.replicas[0].url + "/admin/keys", headers=headers, timeout=10))
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        answers.append(httpx.get(team.replicas[0].url + "/admin/keys", headers=admin, timeout=10))
        answers.append(httpx.get(team.replicas[0].url + "/admin/usage", headers=admin, timeout=10))
        metrics = [httpx.get(gw.url + "/metrics", headers=metrics_headers(gw), timeout=10).text for gw in team.replicas]
        listing = team.cli("keys", "list", "--json").stdout + team.cli("usage").stdout
    finally:
        for gw in team.replicas:
            gw.stop()  # flushes the spans still batched
        receiver.shutdown()
    messages_then_openai = [200, 200, 200, 429, 403, 403, 403, 403, 200, 200, 200, 403]
    admin_answers = [401, 401, 200, 200]
    assert [r.status_code for r in answers] == messages_then_openai + admin_answers
    assert exported, "no spans were exported"
    logs = "".join(gw.log.read_text(errors="replace") for gw in team.replicas)
    assert "auth: team keys" in logs
    everything = {
        "logs": logs.encode(),
        "spans": b"".join(exported),
        "metrics": "".join(metrics).encode(),
        "answers": b"".join(r.content + str(r.headers).encode() for r in answers),
        "cli": listing.encode(),
    }
    secrets_given = {
        "alice": alice,
        "bob": bob,
        "gone": gone,
        "stranger": stranger,
        "admin": ADMIN_TOKEN,
        "upstream": upstream_key,
    }
    found = [
        (what, where) for what, s in secrets_given.items() for where, text in everything.items() if s.encode() in text
    ]
    assert not found, found
    assert upstream_key in json.dumps(httpx.get(standin.url + "/_headers", timeout=10).json())  # it was used


def test_a_spent_cloud_budget_leaves_the_local_box_only(make_team, text_llama: Process, standin: Process) -> None:
    team = make_team(
        {
            "local": {"kind": "llamacpp", "url": text_llama.url},
            "cloud": {"kind": "anthropic", "url": standin.url, "api_key": "sk-ant-team"},
        },
        extra=HAIKU_TO_CLOUD,
    )
    key = team.add_key("alice", "core", "--cloud-tokens", "100")
    quick = {**ask(), "model": "claude-haiku-4-5"}
    first = team.post(key, quick)
    assert first.status_code == 200 and first.headers["x-ccgate-backend"] == "cloud"  # ~300 tokens: spent now
    over = team.post(key, quick, replica=1)
    status, kind, message = error_of(over)
    assert (status, kind) == (429, "rate_limit_error") and "cloud budget is spent" in message
    assert "cloud: key alice has spent its cloud budget" in over.headers["x-ccgate-fallback-reason"]
    assert 0 < int(over.headers["retry-after"]) <= 86400  # the end of the UTC day
    assert team.post(key, replica=1).headers["x-ccgate-backend"] == "local"  # the box still serves it
    assert len(httpx.get(standin.url + "/_requests", timeout=10).json()) == 1


def test_open_mode_is_refused_off_loopback_unless_asked_for(tmp_path: Path, logdir: Path, owned) -> None:
    from tests.harness.procs import free_port

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "backends:\n  local: {kind: llamacpp, url: 'http://127.0.0.1:9'}\nrules:\n  - {name: d, to: [local]}\n"
    )
    serve = [sys.executable, "-m", "router.cli", "serve", "--config", str(policy), "--host", "0.0.0.0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCGATE_") and k != "REDIS_URL"}
    env["CCGATE_STATE_DIR"] = str(tmp_path / "state")
    refused = subprocess.run([*serve, "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "refusing to serve 0.0.0.0 without team keys" in refused.stderr
    every = [*serve[:-2], "--host", "", "--port", str(free_port())]  # an empty host is every interface too
    refused = subprocess.run(every, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "without team keys" in refused.stderr, refused.stderr
    no_redis = subprocess.run(
        [*serve, "--port", str(free_port())], env={**env, "CCGATE_AUTH": "keys"}, capture_output=True, text=True
    )
    assert no_redis.returncode == 2 and "set REDIS_URL" in no_redis.stderr
    port = free_port()
    gw = owned(
        Process(f"ccgate-{port}", [*serve, "--port", str(port), "--allow-open"], port, logdir / f"open-{port}.log", env)
    )
    gw.start("/healthz")
    assert "auth: open: anyone who reaches 0.0.0.0" in gw.log.read_text()
    assert httpx.post(gw.url + "/admin/explain", json=ask(), timeout=10).status_code == 200  # its own, open


def test_with_redis_gone_known_keys_keep_working_and_new_ones_get_a_retryable_refusal(
    make_team, text_llama: Process, logdir: Path
) -> None:
    """Keys and limits live in Redis. When it stops answering, a key seen a moment ago keeps its
    record and its limits go unchecked (routing falls back to local state the same way); a key
    never seen cannot be checked: a 529 with retry-after, in the caller's dialect. Never a 500."""
    redis = start_redis(logdir)
    team = make_team(
        {"local": {"kind": "llamacpp", "url": text_llama.url}},
        replicas=1,
        env={"REDIS_URL": f"redis://127.0.0.1:{redis.port}/0"},
    )
    alice = team.add_key("alice", "core", "--rpm", "1000", "--tpm", "10000000")
    bob = team.add_key("bob", "core")
    body = {**ask(), "max_tokens": 4}
    assert team.post(alice, body).status_code == 200
    redis.stop()

    # for twice the key cache's life (0.5 s): the record is kept, not dropped, while Redis is away
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        answer = team.post(alice, body)
        assert answer.status_code == 200, answer.text
    refused = team.post(bob, body)
    status, kind, message = error_of(refused)
    assert (status, kind) == (529, "overloaded_error") and "Redis is unavailable" in message
    assert refused.headers["retry-after"] == "1"
    chat = httpx.post(
        team.replicas[0].url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {bob}"},
        timeout=60,
    )
    assert chat.status_code == 529 and chat.json()["error"]["code"] == "overloaded_error"
    log = team.replicas[0].log.read_text()
    assert "limits of team keys not checked: Redis unavailable" in log
    assert "unexpected error" not in log
