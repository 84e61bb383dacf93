"""One way to reach Redis from a REDIS_URL, whatever kind of Redis the team runs.

- `redis://host:port/db` and `unix:///path?db=N`: plain;
- `rediss://host:port/db`: TLS. The certificate is checked against the system CA store (which
  honours `SSL_CERT_FILE` / `SSL_CERT_DIR`), or `?ssl_ca_certs=/path/ca.pem`; a client
  certificate with `?ssl_certfile=...&ssl_keyfile=...`; any other redis-py `ssl_*` option too;
- `redis+sentinel://[[user]:password@]HOST:PORT[,HOST:PORT...]/MASTER[/DB]` (and
  `rediss+sentinel://` for TLS to the sentinels and the master): the master that the sentinels
  name, followed through a failover. The password is the master's; sentinels that want one of
  their own get `?sentinel_password=` (and `?sentinel_username=`).

Every kind gets the same connection class: it counts round trips and packs commands with
hiredis (redis-py would keep its own SSL, Unix-socket or Sentinel class for those URLs, and lose
both). Redis Cluster is refused (`refuse_cluster`): the multi-key scripts need every key on one
node, and one Redis serves far more than a team's load (the capacity model in the deploy docs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
import redis.asyncio as redis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection, SentinelManagedSSLConnection

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme → TLS
SCHEMES = "redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://"
SENTINEL_PORT = 26379
_SENTINEL_OWN = ("sentinel_password", "sentinel_username")


class RedisUrlError(ValueError):
    """A REDIS_URL that names no Redis ccgate can use; the message says what is wrong."""


class ClusterRefused(Exception):
    """The Redis at REDIS_URL runs in cluster mode (not a RedisError: nothing retries it)."""


def connect(url: str, on_round_trip: Callable[[], None] | None = None, **options: Any) -> redis.Redis:
    """A client for the Redis at `url`; `options` (timeouts, decode_responses) are defaults the
    URL's own query may override. Connects lazily: a Redis that is down fails the first call."""
    scheme = url.partition("://")[0].lower()
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_master(url, SENTINEL_SCHEMES[scheme], on_round_trip, options)
    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise RedisUrlError(f"REDIS_URL {describe(url)}: {exc} (one of {SCHEMES})") from None
    base = parsed.pop("connection_class", redis.Connection)
    pool = redis.ConnectionPool(connection_class=_counted(base, on_round_trip), **{**options, **parsed})
    return redis.Redis.from_pool(pool)


def describe(url: str) -> str:
    """The URL for logs and errors: no user, password or query (it may hold key file paths)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not a URL)"
    rest = rest.split("?", 1)[0]
    hosts, slash, path = rest.partition("/")
    hosts = hosts.rpartition("@")[2]
    return f"{scheme}://{hosts}{slash}{path}"


async def refuse_cluster(client: redis.Redis) -> None:
    """Raise ClusterRefused when the server is a cluster node (one round trip, at start-up)."""
    info = await client.info("cluster")
    if str(info.get("cluster_enabled", 0)) == "1":
        raise ClusterRefused(
            "Redis Cluster is not supported: ccgate's scripts read and write several keys at once, which a "
            "cluster allows only on one node, and one Redis serves a team's whole load. Point REDIS_URL at a "
            "single Redis, or at its Sentinels for failover (redis+sentinel://HOST:PORT,.../MASTER)."
        )


def _sentinel_master(
    url: str, tls: bool, on_round_trip: Callable[[], None] | None, options: dict[str, Any]
) -> redis.Redis:
    parts = urlsplit(url)
    netloc = parts.netloc
    credentials, _, hostlist = netloc.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    sentinels = [_host_port(h, url) for h in hostlist.split(",") if h.strip()]
    if not sentinels:
        raise RedisUrlError(f"REDIS_URL {describe(url)}: name at least one sentinel, HOST:PORT[,HOST:PORT...]")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise RedisUrlError(f"REDIS_URL {describe(url)}: expected .../MASTER or .../MASTER/DB after the sentinels")
    service = path[0]
    try:
        query = parse_url(f"redis://sentinel/?{parts.query}") if parts.query else {}
    except ValueError as exc:
        raise RedisUrlError(f"REDIS_URL {describe(url)}: {exc}") from None
    db_text = path[1] if len(path) == 2 else str(query.pop("db", 0))
    if not db_text.isdigit():
        raise RedisUrlError(
            f"REDIS_URL {describe(url)}: the database after the master's name is a number, not {db_text!r}"
        )
    db = int(db_text)
    query.pop("host", None)
    own = {k.removeprefix("sentinel_"): query.pop(k) for k in _SENTINEL_OWN if k in query}
    settings = {**options, **query}
    # the sentinels get the same timeouts and TLS options, and their own credentials only
    reach = {k: v for k, v in settings.items() if k.startswith(("socket_", "ssl_"))}
    sentinel = Sentinel(sentinels, sentinel_kwargs={**reach, **own, **({"ssl": True} if tls else {})}, **settings)
    if username:
        settings["username"] = unquote(username)
    if password:
        settings["password"] = unquote(password)
    base = SentinelManagedSSLConnection if tls else SentinelManagedConnection
    client = sentinel.master_for(
        service, redis_class=_SentinelRedis, connection_class=_counted(base, on_round_trip), db=db, **settings
    )
    client.sentinel = sentinel
    return client


class _SentinelRedis(redis.Redis):
    """The master's client, which also closes its connections to the sentinels."""

    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel is not None:
            await self.sentinel.aclose()


_HOST_PORT = re.compile(r"^\s*(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\s]+))(?::(?P<port>\d+))?\s*$")


def _host_port(text: str, url: str) -> tuple[str, int]:
    match = _HOST_PORT.match(text)
    if match is None:
        raise RedisUrlError(f"REDIS_URL {describe(url)}: {text!r} is not HOST:PORT")
    port = int(match["port"] or SENTINEL_PORT)
    if not 0 < port < 65536:
        raise RedisUrlError(f"REDIS_URL {describe(url)}: port {port} is out of range")
    return unquote(match["v6"] or match["host"]), port


def _counted(base: type[Any], on_send: Callable[[], None] | None) -> type[Any]:
    """`base` (plain, TLS, Unix socket or Sentinel-managed) that counts what it sends (one
    command, or one whole pipeline, is one round trip) and packs commands in C: redis-py's asyncio
    connection packs them in Python, ~2 µs an argument, and a routing decision asks for ~40 keys."""

    class Counted(base):  # type: ignore[misc, valid-type]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            if on_send is not None:
                on_send()
            await super().send_packed_command(command, check_health)

        def pack_command(self, *args: Any) -> list[bytes]:
            if isinstance(args[0], str):  # "CLIENT SETNAME" and the like go as separate words
                args = (*args[0].encode().split(), *args[1:])
            return [hiredis.pack_command(args)]

    Counted.__name__ = Counted.__qualname__ = f"Counted{base.__name__}"
    return Counted
