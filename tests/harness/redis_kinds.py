"""The Redis a team may hand ccgate, run for real: TLS with a private CA, and a Sentinel group.

All of it is Debian's redis-server (7.0, built with TLS): `--tls-port` for TLS, and
`redis-server FILE --sentinel` for a sentinel.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import redis
import trustme

from tests.harness.procs import Process, free_port, listening, start_redis
from tests.harness.wait import wait_until


@dataclass
class Pki:
    """A private CA, a server certificate for localhost, and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, folder: Path) -> Pki:
        ca = trustme.CA(organization_name="ccgate test Redis CA")
        server = ca.issue_cert("localhost", "127.0.0.1")
        client = ca.issue_cert("ccgate@team.example")
        pki = cls(*(folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
        ca.cert_pem.write_to_path(str(pki.ca))
        server.cert_chain_pems[0].write_to_path(str(pki.server_cert))
        server.private_key_pem.write_to_path(str(pki.server_key))
        client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
        client.private_key_pem.write_to_path(str(pki.client_key))
        return pki


def start_tls_redis(logdir: Path, pki: Pki, client_certs: bool = True) -> Process:
    """redis-server on a TLS port only (no plain port), asking for client certificates."""
    port = free_port()
    flags = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(pki.server_cert)]
    flags += ["--tls-key-file", str(pki.server_key), "--tls-ca-cert-file", str(pki.ca)]
    flags += ["--tls-auth-clients", "yes" if client_certs else "no"]
    return start_redis(logdir, port, *flags)  # the later --port 0 wins: TLS only


@dataclass
class SentinelGroup:
    master: Process
    replica: Process
    sentinel: Process
    name: str = "ccgate"

    def url(self, *extra_sentinels: int) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in (*extra_sentinels, self.sentinel.port))
        return f"redis+sentinel://{hosts}/{self.name}"

    def stop(self) -> None:
        for proc in (self.sentinel, self.replica, self.master):
            proc.stop()

    def current_master(self) -> int:
        with redis.Redis(port=self.sentinel.port, socket_timeout=2) as s:
            return int(s.sentinel_get_master_addr_by_name(self.name)[1])

    def replicated(self) -> None:
        """Every write the master took is on the replica (before a test kills the master)."""
        with redis.Redis(port=self.master.port, socket_timeout=5) as m:
            assert m.execute_command("WAIT", 1, 5000) == 1


def start_sentinel_group(logdir: Path, folder: Path, down_after_ms: int = 1000) -> SentinelGroup:
    """A master, its replica, and one sentinel (quorum 1) that promotes the replica
    `down_after_ms` after the master stops answering."""
    master = start_redis(logdir, None, "--dir", str(folder))
    # a replica writes the master's snapshot to its working directory as it syncs
    replica = start_redis(logdir, None, "--replicaof", "127.0.0.1", str(master.port), "--dir", str(folder))
    wait_until(lambda: _link_up(replica.port), "the replica has synced with the master")
    port = free_port()
    conf = folder / f"sentinel-{port}.conf"  # a sentinel rewrites its file: one of its own
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
        f"sentinel monitor ccgate 127.0.0.1 {master.port} 1\n"
        f"sentinel down-after-milliseconds ccgate {down_after_ms}\n"
        "sentinel failover-timeout ccgate 10000\n"
    )
    sentinel = Process(
        f"sentinel-{port}", [_redis_server(), str(conf), "--sentinel"], port, logdir / f"sentinel-{port}.log"
    )
    sentinel.launch()
    wait_until(lambda: listening(port), "the sentinel listens")
    group = SentinelGroup(master, replica, sentinel)
    wait_until(lambda: _sentinel_knows_replica(port, group.name), "the sentinel knows the replica")
    return group


def _redis_server() -> str:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed: run ./scripts/test"
    return binary


def _link_up(port: int) -> bool:
    with redis.Redis(port=port, socket_timeout=2) as r:
        return r.info("replication").get("master_link_status") == "up"


def _sentinel_knows_replica(port: int, name: str) -> bool:
    with redis.Redis(port=port, socket_timeout=2) as s:
        return bool(s.sentinel_slaves(name))


def wait_for_failover(group: SentinelGroup, within: float = 60.0) -> None:
    """Wait until the sentinel names the replica as master."""
    wait_until(lambda: group.current_master() == group.replica.port, "the sentinel promoted the replica", within)
