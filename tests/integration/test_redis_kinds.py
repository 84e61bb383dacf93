"""The Redis a team outgrowing one box hands ccgate: TLS with a private CA and client
certificates (what a managed Redis gives), a Sentinel group that fails over under traffic, and a
Redis Cluster, which ccgate refuses at start-up with the reason. All real redis-servers."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import certifi
import httpx
import pytest
import redis
import yaml

from router.policy.identity import Identity
from router.protocol.usage import Usage
from router.state.accounting import Accounting, last_days
from router.state.queue import SlotQueue
from router.state.redis_client import connect
from router.state.redis_shared import RedisShared
from tests.conftest import write_policy
from tests.harness.procs import Process, free_port, start_gateway, start_redis
from tests.harness.redis_kinds import Pki, SentinelGroup, start_sentinel_group, start_tls_redis, wait_for_failover
from tests.harness.team import ADMIN_TOKEN
from tests.harness.wait import PATIENCE, wait_until, wait_until_async
from tests.integration.test_metrics import scrape, value
from tests.integration.test_passthrough import ask
from tests.integration.test_team import error_of

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
RETRYABLE = {429, 503, 529}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("redis-pki"))


@pytest.fixture(scope="module")
def tls_redis(logdir: Path, pki: Pki):
    proc = start_tls_redis(logdir, pki)
    yield proc
    proc.stop()


def tls_url(proc: Process, pki: Pki, ca_in_url: bool) -> str:
    query = f"ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}"
    return f"rediss://localhost:{proc.port}/0?{query}" + (f"&ssl_ca_certs={pki.ca}" if ca_in_url else "")


def key_prefix(team) -> str:
    return yaml.safe_load(Path(team.policy).read_text())["state"]["key_prefix"]


def usage_by_key(gw: Process) -> dict[str, dict]:
    answer = httpx.get(gw.url + "/admin/usage", params={"by": "key"}, headers=ADMIN, timeout=10)
    if answer.status_code != 200:  # Redis away a moment (a retryable refusal): nothing to read yet
        return {}
    return {row["key"]: row for row in answer.json()["usage"]}


@pytest.mark.parametrize("ca_in_url", [False, True], ids=["ca-in-SSL_CERT_FILE", "ca-in-url"])
def test_a_tls_redis_with_a_private_ca_and_client_certificates(
    make_team, tls_redis: Process, pki: Pki, text_llama: Process, ca_in_url: bool
) -> None:
    # With the CA in the URL, the environment's store is one that does not hold it (certifi's).
    ca_file = certifi.where() if ca_in_url else str(pki.ca)
    team = make_team(
        {"local": {"kind": "llamacpp", "url": text_llama.url}},
        env={"REDIS_URL": tls_url(tls_redis, pki, ca_in_url), "SSL_CERT_FILE": ca_file},
    )
    alice = team.add_key("alice", "core", "--rpm", "3")
    bob = team.add_key("bob", "web")
    body = {**ask(), "max_tokens": 4}
    assert [team.post(alice, body, replica=i % 2).status_code for i in range(4)] == [200, 200, 200, 429]
    assert team.post(bob, body, replica=1).status_code == 200

    long = {**body, "messages": [{"role": "user", "content": "explain this file: " + "x = 1\n" * 1500}]}
    assert team.post(bob, long).status_code == 200  # a prompt of several prefix blocks
    with redis.Redis.from_url(tls_url(tls_redis, pki, ca_in_url=True), decode_responses=True) as direct:
        prefix = key_prefix(team)
        wait_until(lambda: direct.keys(prefix + "px:*"), "the prefix index is written to the TLS Redis")
        assert direct.hlen(prefix + "alive") == 2, "both replicas heartbeat there"
    rows = wait_until(
        lambda: (u := usage_by_key(team.replicas[1])) and {"alice", "bob"} <= set(u) and u,
        "both keys' usage is recorded",
    )
    assert rows["alice"]["output"] > 0 and rows["bob"]["output"] > 0
    report = team.cli("usage", "--by", "key")
    assert report.returncode == 0 and "alice" in report.stdout, report.stderr
    for gw in team.replicas:  # ccgate's own connection class, not redis-py's SSL one: it counts
        samples = scrape(gw)
        assert value(samples, "ccgate_state_redis_up") == 1
        assert value(samples, "ccgate_state_redis_round_trips_total") > 0
        assert "unavailable" not in gw.log.read_text()


def test_a_tls_redis_whose_ca_is_not_trusted_says_so(tls_redis: Process, pki: Pki, tmp_path: Path, logdir) -> None:
    url = tls_url(tls_redis, pki, ca_in_url=False)
    env = {"REDIS_URL": url, "SSL_CERT_FILE": certifi.where(), "CCGATE_AUTH": "keys", "CCGATE_ADMIN_TOKEN": ADMIN_TOKEN}
    policy = write_policy(tmp_path / "policy.yaml", {"local": {"kind": "llamacpp", "url": "http://127.0.0.1:9"}})
    gw = start_gateway(policy, logdir, env)
    try:
        refused = httpx.post(gw.url + "/v1/messages", json=ask(), headers={"x-api-key": "ccg-" + "x" * 43}, timeout=30)
        status, kind, message = error_of(refused)
        assert (status, kind) == (529, "overloaded_error") and "Redis is unavailable" in message
        log = gw.log.read_text()
        assert f"redis at rediss://localhost:{tls_redis.port}/0 unavailable" in log
        assert "CERTIFICATE_VERIFY_FAILED" in log or "certificate verify failed" in log
        assert str(pki.client_key) not in log  # the URL's query is not logged
    finally:
        gw.stop()
    cli = subprocess.run(
        [sys.executable, "-m", "router.cli", "keys", "list", "--config", str(policy)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1 and "certificate verify failed" in cli.stderr, cli.stderr


def test_a_sentinel_failover_under_steady_traffic(make_team, text_llama: Process, logdir: Path, tmp_path: Path) -> None:
    """The master SIGKILLed while two replicas answer a steady stream: every answer meanwhile is a
    200 or a retryable refusal, none hangs, and within 15 s of the kill the gateway works on the
    promoted replica: a key made before (never used) and one made after are both served, and the
    usage written before the failover is still there."""
    group = start_sentinel_group(logdir, tmp_path)
    try:
        failover_under_traffic(make_team, group, text_llama)
    finally:
        group.stop()


def failover_under_traffic(make_team, group: SentinelGroup, text_llama: Process) -> None:
    dead_sentinel = free_port()  # the first sentinel named is down: the next one is asked
    team = make_team(
        {"local": {"kind": "llamacpp", "url": text_llama.url}}, env={"REDIS_URL": group.url(dead_sentinel)}
    )
    alice = team.add_key("alice", "core")
    bob = team.add_key("bob", "core")  # not used until after the failover: read from the new master
    body = {**ask(), "max_tokens": 4}
    before = 0
    for i in range(4):
        answer = team.post(alice, body, replica=i % 2)
        assert answer.status_code == 200, answer.text
        before += answer.json()["usage"]["output_tokens"]
    wait_until(
        lambda: usage_by_key(team.replicas[0]).get("alice", {}).get("output") == before, "alice's usage is written"
    )
    group.replicated()

    answers: list[tuple[float, float, int]] = []  # (sent, took, status)
    stop = threading.Event()

    def steady(replica: int) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status = team.post(alice, body, replica=replica).status_code
            except httpx.HTTPError:
                status = -1
            answers.append((sent, time.monotonic() - sent, status))

    workers = [threading.Thread(target=steady, args=(i % 2,)) for i in range(4)]
    for w in workers:
        w.start()
    try:
        wait_until(lambda: len(answers) >= 8, "traffic flows before the kill")
        killed = time.monotonic()
        group.master.kill()
        wait_for_failover(group)

        def served_on_new_master() -> bool:
            return all(team.post(bob, body, replica=i).status_code == 200 for i in (0, 1))

        wait_until(served_on_new_master, "a key never used before is served by both replicas", within=30)
        back = time.monotonic() - killed
        wait_until(lambda: len([a for a in answers if a[0] > killed + back]) >= 8, "traffic flows after")
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=60)
    assert back <= 15, f"answered again {back:.1f}s after the master died"
    statuses = {status for _, _, status in answers}
    print(f"failover: served again {back:.1f}s after the kill; {len(answers)} answers, statuses {sorted(statuses)}")
    assert statuses <= {200} | RETRYABLE, sorted(statuses)
    assert max(took for _, took, _ in answers) < 10, "a request hung through the failover"
    carol = team.add_key("carol", "core")  # made after: written to the new master
    assert team.post(carol, body, replica=1).status_code == 200
    usage = wait_until(
        lambda: (u := usage_by_key(team.replicas[1])) and u.get("carol", {}).get("output", 0) > 0 and u,
        "usage is written to the new master",
    )
    assert usage["alice"]["output"] > before, "usage from before the failover is kept, and added to"
    for gw in team.replicas:  # waited for: on a loaded machine a 2 s socket timeout may still flip it for a beat
        wait_until(lambda gw=gw: value(scrape(gw), "ccgate_state_redis_up") == 1, "the replica to use Redis again")
        log = gw.log.read_text()
        assert "redis is back" in log and "unexpected error" not in log and "Traceback" not in log


def test_a_redis_cluster_is_refused_at_start_with_the_reason(logdir: Path, tmp_path: Path) -> None:
    bus = ["--cluster-port", str(free_port())]  # else port + 10000, which may not exist
    node = start_redis(
        logdir, None, "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "n.conf"), *bus
    )
    try:
        policy = write_policy(tmp_path / "policy.yaml", {"local": {"kind": "llamacpp", "url": "http://127.0.0.1:9"}})
        with pytest.raises(RuntimeError, match="exited") as failed:
            start_gateway(policy, logdir, {"REDIS_URL": f"redis://127.0.0.1:{node.port}/0"})
        assert "Redis Cluster is not supported" in str(failed.value)
    finally:
        node.stop()


def test_a_redis_that_appears_after_start_up_is_used_and_the_heartbeat_goes_on(logdir: Path, caplog) -> None:
    """A replica started before its Redis finds it at a heartbeat, and keeps beating after (the
    check that refuses a Redis Cluster found then must leave the pooled connection as it was)."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    async def run() -> None:
        shared = RedisShared(url, prefix=f"late-{port}:")
        await shared.start()
        assert not shared.up
        redis_server = start_redis(logdir, port)
        direct = connect(url, decode_responses=True)
        try:
            beats: set[str] = set()

            async def three_beats() -> bool:  # three heartbeats written after Redis appeared
                if (beat := await direct.hget(f"late-{port}:alive", shared.replica)) is not None:
                    beats.add(beat)
                return len(beats) >= 3

            await wait_until_async(three_beats, "the replica heartbeats three times on the Redis it found")
            assert shared.up and not any(task.done() for task in shared._tasks)
            await shared.view([])
            failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert not failed, failed  # e.g. answers read in another protocol than they came in
        finally:
            await shared.stop()
            await direct.aclose()
            redis_server.stop()

    asyncio.run(run())


def test_a_wait_ticket_that_a_failover_lost_takes_its_place_again(redis_url: str) -> None:
    """`when_busy: wait` tickets live in Redis; one written just before a failover may not have
    reached the replica. Its waiter puts it back by its arrival, rather than waiting out its whole
    deadline behind nobody."""

    async def run() -> None:
        client = connect(redis_url)
        queue = SlotQueue(client, prefix=f"lost-{os.urandom(4).hex()}:")
        older = await queue.join("local", 60)
        newer = await queue.join("local", 60)
        await client.delete(queue._key("local"))  # what the promoted replica never got
        try:
            assert not await queue.first("local", newer)  # puts itself back, behind nobody yet
            assert not await queue.first("local", older)  # and so does the older one...
            assert await queue.first("local", older)  # ...which is first again
            assert not await queue.first("local", newer)
            await queue.leave("local", older)
            assert await queue.first("local", newer)
        finally:
            await queue.leave("local", newer)
            await client.aclose()

    asyncio.run(run())


def test_usage_that_could_not_be_written_counts_once_when_redis_is_back(logdir: Path, caplog) -> None:
    """An answer's usage written while Redis is away (down, failing over) is tried again, and
    counted exactly once: a batch that failed may have reached Redis or not, and each answer's
    write carries a marker that makes a second try a no-op."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    prefix = f"once-{port}:"
    caplog.set_level(logging.INFO, logger="ccgate.accounting")

    async def run() -> None:
        client = connect(url, socket_connect_timeout=0.5, socket_timeout=2.0, decode_responses=True)
        accounting = Accounting(client, prefix)
        alice = Identity(key="alice", team="core")
        accounting.record(alice, "cloud", True, Usage(input=100, output=7, model="m"))  # Redis is not there

        def failed_once() -> bool:
            return any("not written yet" in r.getMessage() for r in caplog.records)

        await wait_until_async(failed_once, "the writer's first try failed (nothing listens)")
        redis_server = start_redis(logdir, port)
        try:
            await accounting.drain(within=60 * PATIENCE)  # tried again until Redis takes it
            accounting.record(alice, "cloud", True, Usage(input=1, output=1, model="m"))
            await accounting.drain()
            rows = await accounting.usage(last_days(1))
            got = {r.kind: r.tokens for r in rows if r.key == "alice"}
            assert got == {"input": 101, "output": 8}, got
            # a batch sent twice (its reply lost the first time) counts once
            done = ("alice", "core", "cloud", "m")
            await accounting._record(
                keys=[f"{prefix}recorded:again", f"{prefix}usage:{last_days(1)[0]}"],
                args=[600, 86400, "\t".join((*done, "output")), 5],
            )
            await accounting._record(
                keys=[f"{prefix}recorded:again", f"{prefix}usage:{last_days(1)[0]}"],
                args=[600, 86400, "\t".join((*done, "output")), 5],
            )
            rows = await accounting.usage(last_days(1))
            assert {r.kind: r.tokens for r in rows if r.key == "alice"}["output"] == 13
        finally:
            await client.aclose()
            redis_server.stop()

    asyncio.run(run())
