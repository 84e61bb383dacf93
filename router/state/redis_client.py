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
from contextlib import suppress
from typing import Any
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

import hiredis
import redis.asyncio as redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme → TLS
SCHEMES = "redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://"
SENTINEL_PORT = 26379
_SENTINEL_OWN = ("sentinel_password", "sentinel_username")
# What a URL's query may set (redis-py would take any word, and fail at the first connection)
_QUERY = {
    "db", "username", "password", "client_name", "protocol", "max_connections", "health_check_interval",
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "socket_read_size", "retry_on_timeout",
    "legacy_responses",
}  # fmt: skip
_TLS_QUERY = {
    "ssl_keyfile", "ssl_certfile", "ssl_password", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_path", "ssl_ca_data",
    "ssl_check_hostname", "ssl_ciphers", "ssl_min_version", "ssl_include_verify_flags", "ssl_exclude_verify_flags",
}  # fmt: skip
_TCP_ONLY = {"socket_keepalive"}  # a Unix socket's connection takes no such option
# A sentinel that hangs costs one socket timeout, not redis-py's default ten retries (~26 s)
_NO_RETRY = Retry(NoBackoff(), 0)


class RedisUrlError(ValueError):
    """A REDIS_URL that names no Redis ccgate can use; the message says what is wrong, and never
    holds the URL's password (it shows `describe(url)`)."""


class ClusterRefused(Exception):
    """The Redis at REDIS_URL runs in cluster mode (not a RedisError: nothing retries it)."""


CLUSTER_REFUSED = (
    "Redis Cluster is not supported: ccgate's scripts read and write several keys at once, which a "
    "cluster allows only on one node, and one Redis serves a team's whole load. Point REDIS_URL at a "
    "single Redis, or at its Sentinels for failover (redis+sentinel://HOST:PORT,.../MASTER)."
)


def connect(url: str, on_round_trip: Callable[[], None] | None = None, **options: Any) -> redis.Redis:
    """A client for the Redis at `url`; `options` (timeouts, decode_responses) are defaults the
    URL's own query may override. Connects lazily: a Redis that is down fails the first call."""
    scheme = url.partition("://")[0].lower()
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _bad(url, "it does not parse as a URL (a password's / ? # @ must be percent-encoded)") from None
    if describe(url).endswith(_HIDDEN):  # nothing of it may be repeated: it may be a password
        raise _bad(url, "its parts are ambiguous (a password's / ? # @ must be percent-encoded: %2F %3F %23 %40)")
    if parts.fragment:
        raise _bad(url, "a #fragment means nothing here (a password's # must be percent-encoded as %23)")
    _check_query(url, parts.query, scheme)
    if scheme in SENTINEL_SCHEMES:
        return _sentinel_master(url, parts, SENTINEL_SCHEMES[scheme], on_round_trip, options)
    if scheme not in ("redis", "rediss", "unix"):
        raise _bad(url, f"expected one of {SCHEMES}")
    if scheme != "unix":
        _hosts(url, parts.netloc, single=True)
        db = parts.path.strip("/")
        if db and not _DIGITS.match(db):
            raise _bad(url, "the database after the host is a number")
        if db and parse_qs(parts.query).get("db", [db]) != [db]:
            raise _bad(url, "two databases are given (in the path and in ?db=)")
    try:
        parsed = parse_url(url)
    except ValueError as exc:
        said = str(exc)  # redis-py's own words; only those that echo nothing of the URL
        raise _bad(url, said if said.startswith("Invalid value for") else "it does not parse") from None
    base = parsed.pop("connection_class", redis.Connection)
    pool = redis.ConnectionPool(connection_class=_counted(base, on_round_trip), **{**options, **parsed})
    return redis.Redis.from_pool(pool)


def describe(url: str) -> str:
    """The URL for logs and errors: hosts and path only, no user, password or query (which may
    hold key file paths). A URL whose parts are ambiguous (a password with an unencoded / ? or #)
    is not shown at all: what looks like its host may be a piece of the password."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        return "(not a URL)"
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{scheme}://{_HIDDEN}"
    hosts = parts.netloc.rpartition("@")[2]
    # An @ after the host means a password with an unencoded / ? or # split it (in the query:
    # where an option's name would be; a value, a key file's path say, may hold one).
    names = "".join(item.partition("=")[0] for item in parts.query.split("&"))
    stray = parts.path + parts.fragment + names
    clean = "@" not in stray and all(_HOST_PORT.match(h) for h in hosts.split(",") if h)
    if not clean:
        return f"{scheme}://{_HIDDEN}"
    return f"{scheme}://{hosts}{parts.path}"


def reason(exc: BaseException) -> str:
    """Why a Redis call failed, for logs and the CLI: redis-py's sentinel errors carry each
    sentinel's whole connection settings (key file paths among them), so those are summed up."""
    text = str(exc)
    if isinstance(exc, MasterNotFoundError):
        service = re.match(r"No master found for '([^']*)'", text)
        name = service[1] if service else "?"
        failures = re.findall(r"host=([^,]+),port=(\d+),.*?\)>\)>\)> - (.+?)(?=, <redis|$)", text, re.S)
        tried = "; ".join(f"{host}:{port}: {why.strip()[:80]}" for host, port, why in failures)
        return f"no sentinel names a healthy master {name!r}" + (f" ({tried})" if tried else "")
    return f"{type(exc).__name__}: {text[:300]}"


async def is_cluster(client: redis.Redis) -> bool:
    """Whether the server is a Redis Cluster node. HELLO (any user may send it, unlike INFO) says
    `mode`; a server or user that refuses it is taken for a plain Redis. Without a protocol
    version it changes nothing on the connection (with one, a pooled connection would answer in
    another protocol than the client reads)."""
    try:
        hello = await client.execute_command("HELLO")
    except RedisError:
        return False
    if isinstance(hello, list | tuple):
        hello = dict(zip(hello[::2], hello[1::2], strict=False))
    mode = next((v for k, v in hello.items() if (k.decode() if isinstance(k, bytes) else k) == "mode"), b"")
    return (mode.decode() if isinstance(mode, bytes) else str(mode)) == "cluster"


async def refuse_cluster(url: str) -> None:
    """At start-up: raise ClusterRefused when `url` is a cluster node. A Redis that cannot be
    reached is left to the replica's own handling (it starts, and routes on its own state)."""
    client = connect(url, socket_connect_timeout=2.0, socket_timeout=2.0)
    try:
        if await is_cluster(client):
            raise ClusterRefused(CLUSTER_REFUSED)
    except (RedisError, OSError):
        return
    finally:
        with suppress(RedisError, OSError):
            await client.aclose()


_HIDDEN = "(not shown: it does not parse)"


def _bad(url: str, why: str) -> RedisUrlError:
    return RedisUrlError(f"REDIS_URL {describe(url)}: {why}")


_DIGITS = re.compile(r"^[0-9]+$")


def _check_query(url: str, query: str, scheme: str) -> None:
    allowed = _QUERY | (_TLS_QUERY if scheme in ("rediss", "rediss+sentinel") else set())
    allowed |= set(_SENTINEL_OWN) if scheme in SENTINEL_SCHEMES else set()
    allowed -= _TCP_ONLY if scheme == "unix" else set()
    for name in parse_qs(query, keep_blank_values=True):
        if name in allowed:
            continue
        if not re.fullmatch(r"[a-z_]{1,40}", name):  # not an option's name: never repeated
            raise _bad(url, "its query does not parse (a password's ? must be percent-encoded as %3F)")
        hint = " (TLS options need rediss://)" if name in _TLS_QUERY else ""
        raise _bad(url, f"?{name}= is not an option ccgate passes to Redis{hint}")


def _sentinel_master(
    url: str, parts: SplitResult, tls: bool, on_round_trip: Callable[[], None] | None, options: dict[str, Any]
) -> redis.Redis:
    credentials, _, hostlist = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":") if credentials else ("", "", "")
    sentinels = _hosts(url, hostlist, single=False)
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise _bad(url, "expected .../MASTER or .../MASTER/DB after the sentinels")
    service = path[0]
    try:
        query = parse_url(f"redis://sentinel/?{parts.query}") if parts.query else {}
    except ValueError as exc:
        said = str(exc)
        raise _bad(url, said if said.startswith("Invalid value for") else "its query does not parse") from None
    if len(path) == 2 and "db" in query and str(query["db"]) != path[1]:
        raise _bad(url, "two databases are given (after the master's name and in ?db=)")
    db_text = path[1] if len(path) == 2 else str(query.get("db", 0))
    query.pop("db", None)
    if not _DIGITS.match(db_text):
        raise _bad(url, "the database after the master's name is a number")
    query.pop("host", None)
    own = {k.removeprefix("sentinel_"): query.pop(k) for k in _SENTINEL_OWN if k in query}
    settings = {**options, **query}
    # the sentinels get the same timeouts and TLS options, their own credentials only, no retries
    reach = {k: v for k, v in settings.items() if k.startswith(("socket_", "ssl_"))}
    reach.update(own, retry=_NO_RETRY, **({"ssl": True} if tls else {}))
    sentinel = Sentinel(sentinels, sentinel_kwargs=reach, **settings)
    if username:
        settings["username"] = unquote(username)
    if password:
        settings["password"] = unquote(password)
    base = SentinelManagedSSLConnection if tls else SentinelManagedConnection
    client = sentinel.master_for(
        service, redis_class=_SentinelRedis, connection_class=_counted(base, on_round_trip), db=int(db_text), **settings
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


_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[A-Za-z0-9_.\-%]+))(?::(?P<port>[0-9]+))?$")


def _hosts(url: str, text: str, single: bool) -> list[tuple[str, int]]:
    """HOST[:PORT][,HOST[:PORT]...] (one only when `single`); an item that is not is named by
    its place, never echoed (a mistyped URL may have a password there)."""
    text = text.rpartition("@")[2]
    if single and not text:
        return [("localhost", 6379)]  # redis-py's default, as in redis:///0
    if not text:
        raise _bad(url, "name at least one sentinel: HOST:PORT[,HOST:PORT...]")
    items = text.split(",")
    if single and len(items) > 1:
        raise _bad(url, "one host only (several are for redis+sentinel://)")
    out = []
    for number, item in enumerate(items, 1):
        match = _HOST_PORT.match(item)
        if match is None or (not single and not item):
            where = "the host" if single else f"sentinel {number} of {len(items)}"
            raise _bad(url, f"{where} is not HOST:PORT (a password's / ? # @ must be percent-encoded)")
        port = int(match["port"] or SENTINEL_PORT)
        if not 0 < port < 65536:
            raise _bad(url, f"port {port} is out of range")
        out.append((unquote(match["v6"] or match["host"]), port))
    return out


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
