"""`ccgate keys ...` and `ccgate usage`: team keys and usage, straight from Redis."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import msgspec
import redis.asyncio as redis

from router.admission import limits_problem, local_backends
from router.policy.identity import Limits
from router.policy.loader import PolicyError, load_policy
from router.policy.schema import Policy
from router.settings import Settings
from router.state.accounting import MAX_DAYS, Accounting, last_days, summarize, usage_days
from router.state.keys import KeyProblem, KeyStore
from router.state.redis_client import RedisUrlError, connect, describe, reason


def run_team_command(args: argparse.Namespace) -> int:
    """Exit 0 on success, 1 when the operation cannot be done (the reason on stderr), 2 on bad usage."""
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
    if args.command == "usage" and usage_days(args.since) is None:
        print(f"ccgate: --since: expected Nd with N from 1 to {MAX_DAYS}, e.g. 7d", file=sys.stderr)
        return 2
    if args.command == "keys" and args.keys_command == "add" and (problem := limits_problem(_limits(args), policy)):
        print(f"ccgate: {problem}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, url, policy))
    except RedisUrlError as exc:
        print(f"ccgate: {exc}", file=sys.stderr)
        return 2
    except KeyProblem as exc:
        print(f"ccgate: {exc}", file=sys.stderr)
        return 1
    except (OSError, redis.RedisError) as exc:
        print(f"ccgate: cannot use Redis at {describe(url)}: {reason(exc)}", file=sys.stderr)
        return 1


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


async def _run(args: argparse.Namespace, url: str, policy: Policy) -> int:
    client = connect(url, socket_connect_timeout=5)
    prefix = policy.state.key_prefix
    try:
        if args.command == "usage":
            return await _usage(args, Accounting(client, prefix), policy)
        store = KeyStore(client, prefix, cache_seconds=0)
        if args.keys_command == "add":
            key = await store.add(args.name, args.team, _limits(args))
            print(f"key {args.name!r} for team {args.team!r}; it is shown once, here, and kept only hashed:")
            print(key)
        elif args.keys_command == "revoke":
            record = await store.revoke(args.name)
            print(f"key {record.name!r} (team {record.team!r}) revoked: every replica refuses it within a second")
        else:
            records = await store.records()
            if args.json:
                print(json.dumps([r.public() for r in records], indent=2))
            for r in [] if args.json else records:
                state = f"revoked {_when(r.revoked)}" if r.revoked else f"made {_when(r.created)}"
                limits = ", ".join(f"{k}={v}" for k, v in msgspec.to_builtins(r.limits).items()) or "team's limits"
                print(f"{r.name:<20} {r.team:<16} {state:<28} {limits}")
        return 0
    finally:
        await client.aclose()


async def _usage(args: argparse.Namespace, accounting: Accounting, policy: Policy) -> int:
    days = usage_days(args.since)
    assert days is not None
    rows = summarize(await accounting.usage(last_days(days)), args.by, local_backends(policy), policy.prices)
    if args.json:
        print(json.dumps({"since": f"{days}d", "by": args.by, "usage": rows}, indent=2))
        return 0
    print(
        f"{args.by:<24} {'input':>12} {'cache write':>12} {'cache read':>12} {'output':>10} {'(est.)':>8} "
        f"{'local':>6} {'cloud $':>10}"
    )
    for row in rows:
        cost = "" if row["cost_usd"] is None else f"{row['cost_usd']:.2f}"
        written = row["cache_write"] + row["cache_write_1h"]
        figures = (
            f"{row['input']:>12,} {written:>12,} {row['cached']:>12,} {row['output']:>10,} "
            f"{row['estimated'] or '':>8} {row['local_share']:>6.0%}"
        )
        print(f"{row[args.by][:24]:<24} {figures} {cost:>10}")
    if not rows:
        print(f"(no usage in the last {days} days)")
    elif not policy.prices:
        print("(no cloud cost: the policy has no `prices:`; pass the team's policy with --config)")
    elif any(row["estimated"] for row in rows):
        print("(est.: output tokens counted from what was relayed, for answers cut short before their final count)")
    return 0


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else ""
