"""REDIS_URL → a client: every kind of Redis gets ccgate's counted connection, and a URL that
names nothing usable says what is wrong. (Connecting for real: tests/integration/test_redis_kinds.py.)"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from router.state.redis_client import RedisUrlError, connect, describe, reason
from tests.harness.procs import free_port


def pool_of(url: str, **options):
    return connect(url, **options).connection_pool


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        ("redis://h:6380/2", Connection, {"host": "h", "port": 6380, "db": 2}),
        ("rediss://h:6380/0", SSLConnection, {"host": "h", "port": 6380}),
        (
            "rediss://h/0?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem",
            SSLConnection,
            {"ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"},
        ),
        ("unix:///run/redis.sock?db=3", UnixDomainSocketConnection, {"path": "/run/redis.sock", "db": 3}),
        ("redis+sentinel://s1:26379,s2/mymaster/4", SentinelManagedConnection, {"db": 4}),
        ("rediss+sentinel://s1:26379/mymaster?ssl_ca_certs=/ca.pem", SentinelManagedSSLConnection, {}),
    ],
)
def test_every_kind_keeps_its_own_class_and_counts_round_trips(url: str, base: type, expected: dict) -> None:
    sent: list[int] = []
    pool = connect(url, lambda: sent.append(1), socket_timeout=2.0).connection_pool
    cls = pool.connection_class
    assert issubclass(cls, base) and cls is not base
    assert {k: pool.connection_kwargs.get(k) for k in expected} == expected
    assert pool.connection_kwargs["socket_timeout"] == 2.0
    packed = cls.pack_command(None, "CLIENT SETNAME", "x", 1)
    assert packed == [b"*4\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$1\r\nx\r\n$1\r\n1\r\n"]


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://:pw@host:6379",
        "redis://user:pw@host:6379/0?protocol=3",
        "rediss://host:6380?ssl_cert_reqs=none",
        "unix:///tmp/redis.sock?db=1&password=x",
        "redis://[::1]:6379/0",
        "rediss://default:TOKEN@xxx.upstash.io:6379",
        "rediss://:KEY@name.redis.cache.windows.net:6380/0",
        "redis://my_host:6379/",
        "REDIS://host/2?db=2",
        "redis://host?db=1",
        "redis://:p%40ss%2Fw%3Fd@host/0",
        "rediss://h/0?ssl_keyfile=/home/a@b/k.pem",
    ],
)
def test_urls_redis_py_takes_are_taken_alike(url: str) -> None:
    import redis.asyncio as plain

    ours, theirs = pool_of(url).connection_kwargs, plain.Redis.from_url(url).connection_pool.connection_kwargs
    keys = {"host", "port", "db", "username", "password", "path", "protocol", "ssl_cert_reqs", "ssl_keyfile"}
    assert {k: ours.get(k) for k in keys} == {k: theirs.get(k) for k in keys}


def test_the_url_query_wins_over_ccgate_defaults() -> None:
    pool = pool_of("redis://h/0?socket_timeout=7", socket_timeout=2.0)
    assert pool.connection_kwargs["socket_timeout"] == 7.0


def test_a_sentinel_url_names_its_sentinels_master_and_credentials() -> None:
    client = connect("redis+sentinel://u:p%40ss@[::1]:26380,s2,s3:1/cache?sentinel_password=sp&socket_timeout=3")
    pool = client.connection_pool
    assert pool.service_name == "cache" and pool.is_master
    assert pool.connection_kwargs["username"] == "u" and pool.connection_kwargs["password"] == "p@ss"
    assert pool.connection_kwargs["db"] == 0
    sentinels = client.sentinel.sentinels
    assert [
        (s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"]) for s in sentinels
    ] == [
        ("::1", 26380),
        ("s2", 26379),
        ("s3", 1),
    ]
    for s in sentinels:  # the sentinels' own password, never the master's; the same timeouts
        assert s.connection_pool.connection_kwargs.get("password") == "sp"
        assert s.connection_pool.connection_kwargs["socket_timeout"] == 3.0
        # a hung sentinel costs one timeout, not redis-py's default ten retries with backoff (~26 s)
        assert s.connection_pool.connection_kwargs["retry"].get_retries() == 0
    asyncio.run(client.aclose())


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://h:6379", "one of redis://"),
        ("redis+cluster://h:6379", "one of redis://"),
        ("redis+sentinel://s1:26379", "MASTER"),
        ("redis+sentinel:///mymaster", "at least one sentinel"),
        ("redis+sentinel://s1:99999/m", "out of range"),
        ("redis+sentinel://s1:26379/m/x", "is a number"),
        ("redis+sentinel://s1:26379/m/0/extra", "MASTER/DB"),
        ("redis://h/0?socket_timeout=soon", "socket_timeout"),
        ("redis+sentinel://s1/m/1?db=2", "two databases"),
        ("redis://h/1?db=2", "two databases"),
        ("redis+sentinel://s1/m/\u00b2", "is a number"),
        ("redis+sentinel://s1/m/\u0663", "is a number"),
        ("redis://h/abc", "is a number"),
        ("redis+sentinel://[::1/m", "does not parse"),
        ("redis+sentinel://s1:26379,/m", "sentinel 2 of 2"),
        ("redis+sentinel://,s1/m", "sentinel 1 of 2"),
        ("redis+sentinel://s1/m?sentinel_pasword=x", "?sentinel_pasword= is not an option"),
        ("redis://h/0?ssl_ca_certs=/ca.pem", "TLS options need rediss://"),
        ("redis://h/0?sentinel_password=x", "is not an option"),
        ("redis://h/0#frag", "fragment"),
        ("redis://a:1,b:2/0", "one host only"),
        ("unix:///x.sock?socket_keepalive=true", "?socket_keepalive= is not an option"),
        ("redis://u:1234?x@host/0", "ambiguous"),
        ("rediss://default:ab?cd@x.upstash.io:6379", "ambiguous"),
        ("redis://admin:1234/secret@redis.internal:6379", "ambiguous"),
        ("redis+sentinel://admin:26379/Sec@h1:26379", "ambiguous"),
    ],
)
def test_a_url_that_names_no_usable_redis_says_why(url: str, says: str) -> None:
    with pytest.raises(RedisUrlError, match="REDIS_URL") as raised:
        connect(url)
    assert says in str(raised.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@h:6379/0", "redis://h:6379/0"),
        ("rediss://u:hunter2@h/0?ssl_keyfile=/secret/k.pem", "rediss://h/0"),
        ("redis+sentinel://:hunter2@s1:26379,s2:26379/mymaster/1", "redis+sentinel://s1:26379,s2:26379/mymaster/1"),
        ("unix:///run/redis.sock?password=hunter2", "unix:///run/redis.sock"),
        ("hunter2", "(not a URL)"),
        ("redis://:hunter/2@h:6379/0", "redis://(not shown: it does not parse)"),
        ("redis+sentinel://:hunter?2@s1/m", "redis+sentinel://(not shown: it does not parse)"),
        ("redis+sentinel://:hunter#2@s1/m", "redis+sentinel://(not shown: it does not parse)"),
        ("redis+sentinel://:p%40ss@[fe80::1%25eth0]:26379/m", "redis+sentinel://[fe80::1%25eth0]:26379/m"),
        ("redis+sentinel://:pw@s1/m?sentinel_password=p@ss", "redis+sentinel://s1/m"),
    ],
)
def test_the_url_in_logs_carries_no_password(url: str, shown: str) -> None:
    assert describe(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter/2@h:6379/0",
        "redis+sentinel://:hunter?2@s1/m",
        "redis+sentinel://:hunter#2@s1/m",
        "redis+sentinel://u:hunter2x@s1:99999/m",
        "rediss://:hunter2x@h:port/0",
        "redis+sentinel://:hunter2x@s1/m/\u00b2",
        "redis://u:hunter2x?x@host/0",
        "rediss://default:hunter?2x@x.upstash.io:6379",
        "redis://admin:1234/hunter2x@redis.internal:6379",
        "redis+sentinel://admin:26379/ab/hunter2x@h1",
    ],
)
def test_an_error_about_a_url_never_shows_its_password(url: str) -> None:
    with pytest.raises(RedisUrlError) as raised:
        connect(url)
    assert "hunter" not in str(raised.value), raised.value


def test_a_sentinel_failure_is_said_without_the_connection_settings() -> None:
    client = connect(f"rediss+sentinel://127.0.0.1:{free_port()}/m?ssl_keyfile=/secret/client.key", socket_timeout=1)

    async def ping() -> BaseException:
        try:
            await client.ping()
        except Exception as exc:  # noqa: BLE001 - what the gateway would log
            return exc
        finally:
            await client.aclose()
        raise AssertionError("no sentinel listens there")

    said = reason(asyncio.run(ping()))
    assert said.startswith("no sentinel names a healthy master 'm'") and "ConnectionError" in said, said
    assert "/secret" not in said and len(said) < 300
