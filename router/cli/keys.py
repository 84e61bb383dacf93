"""`ccgate keys add|list|revoke`: team keys, kept in Redis (hashed); and the set-up every command
on the team's Redis shares (`ccgate usage` too)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import redis.asyncio as redis

from router.admission import limits_problem
from router.cli.output import emit
from router.config import Settings
from router.policy.identity import Limits
from router.policy.loader import PolicyError, load_policy
from router.policy.schema import Price
from router.state.keys import KeyProblem, KeyStore
from router.state.published_policy import KEY as POLICY_KEY
from router.state.published_policy import decode
from router.state.redis_client import RedisUrlError, connect, describe, reason

Work = Callable[[argparse.Namespace, redis.Redis, str, "TeamPolicy"], Awaitable[int]]


def add_parser(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="team keys: add, list, revoke (needs REDIS_URL)")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    add = keys_commands.add_parser("add", help="make a key; it is printed once, alone on the last line")
    add.add_argument("name")
    add.add_argument("--team", required=True)
    add.add_argument("--rpm", type=int, help="requests per minute")
    add.add_argument("--tpm", type=int, help="tokens per minute (input + cached + output)")
    add.add_argument("--cloud-tokens", type=int, help="cloud tokens per --budget-per period")
    add.add_argument("--budget-per", choices=["day", "month"])
    add.add_argument("--local-share", type=int, help="requests at once on the local box")
    add.add_argument("--backends", help="the backends it may use, comma separated (e.g. local-only: local)")
    add.add_argument("--when-busy", choices=["fallback", "wait", "reject"])
    add.add_argument("--wait-seconds", type=float, help="with --when-busy wait (default 30)")
    listing = keys_commands.add_parser("list", help="every key: name, team, limits, made, revoked")
    listing.add_argument("--json", action="store_true")
    revoke = keys_commands.add_parser("revoke", help="refuse a key from now on (every replica within a second)")
    revoke.add_argument("name")
    for sub in (add, listing, revoke):
        add_policy_option(sub)
    keys.set_defaults(run=run)


def add_policy_option(parser: argparse.ArgumentParser) -> None:
    """--config for the commands on the team's Redis (keys, usage): where its policy is found."""
    parser.add_argument(
        "--config",
        type=Path,
        help="the team's policy (default: CCGATE_CONFIG, else what the gateways on REDIS_URL published)",
    )


def run(args: argparse.Namespace) -> int:
    return on_team_redis(args, _keys, _check_limits)


@dataclass(frozen=True)
class TeamPolicy:
    """What these commands need of the team's policy: its backends, which are local, its prices,
    and where that was read (a file given, or what the gateways on the Redis published)."""

    backends: dict[str, str]  # name → kind
    prices: dict[str, Price]
    source: str

    @property
    def local(self) -> list[str]:
        return [name for name, kind in self.backends.items() if kind == "llamacpp"]


def on_team_redis(
    args: argparse.Namespace, work: Work, check: Callable[[argparse.Namespace, TeamPolicy], str | None] | None = None
) -> int:
    """Run `work` on the team's Redis, with the team's policy: the file given (--config, or
    CCGATE_CONFIG as for `ccgate serve`), else what the gateways on that Redis published, else the
    built-in one. Exit 0 on success, 1 when the operation cannot be done (the reason on stderr), 2
    on bad usage."""
    explicit = args.config is not None or bool(os.environ.get("CCGATE_CONFIG"))
    try:
        settings = Settings.from_env(config=args.config)
        policy = load_policy(settings.policy_path)
    except (PolicyError, ValueError) as exc:
        print(f"ccgate: {exc}", file=sys.stderr)
        return 2
    url = settings.redis_url or policy.state.redis_url
    if not url:
        print("ccgate: team keys and usage live in Redis: set REDIS_URL", file=sys.stderr)
        return 2
    prefix = policy.state.key_prefix
    given = TeamPolicy(
        {name: config.kind for name, config in policy.backends.items()},
        dict(policy.prices),
        str(settings.policy_path) if explicit else "the built-in policy (no gateway has published one on this Redis)",
    )

    async def go() -> int:
        client = connect(url, socket_connect_timeout=5)
        try:
            team = given if explicit else await _published(client, prefix) or given
            if check is not None and (problem := check(args, team)):
                print(f"ccgate: {problem}", file=sys.stderr)
                return 2
            return await work(args, client, prefix, team)
        finally:
            await client.aclose()

    try:
        return asyncio.run(go())
    except RedisUrlError as exc:
        print(f"ccgate: {exc}", file=sys.stderr)
        return 2
    except KeyProblem as exc:
        print(f"ccgate: {exc}", file=sys.stderr)
        return 1
    except (OSError, redis.RedisError) as exc:
        print(f"ccgate: cannot use Redis at {describe(url)}: {reason(exc)}", file=sys.stderr)
        return 1


async def _published(client: redis.Redis, prefix: str) -> TeamPolicy | None:
    published = decode(await client.get(prefix + POLICY_KEY))
    if published is None:
        return None
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(published.at))
    return TeamPolicy(
        published.backends, published.prices, f"the policy the gateways on this Redis run (put in force {when})"
    )


def _check_limits(args: argparse.Namespace, team: TeamPolicy) -> str | None:
    if args.keys_command != "add":
        return None
    problem = limits_problem(_limits(args), team.backends)
    return f"{problem}; read from {team.source}" if problem else None


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(
        rpm=args.rpm,
        tpm=args.tpm,
        cloud_tokens=args.cloud_tokens,
        budget_per=args.budget_per,
        local_share=args.local_share,
        backends=_backends(args),
        when_busy=args.when_busy,
        wait_seconds=args.wait_seconds,
    )


def _backends(args: argparse.Namespace) -> list[str] | None:
    return [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None


async def _keys(args: argparse.Namespace, client: redis.Redis, prefix: str, team: TeamPolicy) -> int:
    store = KeyStore(client, prefix, cache_seconds=0)
    if args.keys_command == "add":
        key = await store.add(args.name, args.team, _limits(args))
        emit(f"key {args.name!r} for team {args.team!r}; it is shown once, here, and kept only hashed:")
        emit(key)
    elif args.keys_command == "revoke":
        record = await store.revoke(args.name)
        emit(f"key {record.name!r} (team {record.team!r}) revoked: every replica refuses it within a second")
    else:
        records = await store.records()
        if args.json:
            emit(json.dumps([r.public() for r in records], indent=2))
        for r in [] if args.json else records:
            state = f"revoked {_when(r.revoked)}" if r.revoked else f"made {_when(r.created)}"
            limits = ", ".join(f"{k}={v}" for k, v in msgspec.to_builtins(r.limits).items()) or "team's limits"
            emit(f"{r.name:<20} {r.team:<16} {state:<28} {limits}")
    return 0


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else ""
