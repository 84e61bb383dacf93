"""`ccgate usage`: tokens per key, team, backend or model over the last days, with the local
share and the cloud cost, from the team's Redis."""

from __future__ import annotations

import argparse
import json

import redis.asyncio as redis

from router.cli.keys import TeamPolicy, add_policy_option, on_team_redis
from router.cli.output import emit
from router.state.accounting import MAX_DAYS, Accounting, last_days, summarize, usage_days


def add_parser(commands: argparse._SubParsersAction) -> None:
    usage = commands.add_parser(
        "usage", help="tokens per key, team, backend or model: local share, cloud cost (needs REDIS_URL)"
    )
    usage.add_argument("--since", default="7d", help="how many days back: 7d, 30d (default 7d)")
    usage.add_argument("--by", choices=["key", "team", "backend", "model"], default="key")
    usage.add_argument("--json", action="store_true")
    add_policy_option(usage)
    usage.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return on_team_redis(args, _usage, _check_since)


def _check_since(args: argparse.Namespace, team: TeamPolicy) -> str | None:
    if usage_days(args.since) is None:
        return f"--since: expected Nd with N from 1 to {MAX_DAYS}, e.g. 7d"
    return None


async def _usage(args: argparse.Namespace, client: redis.Redis, prefix: str, team: TeamPolicy) -> int:
    accounting = Accounting(client, prefix)
    days = usage_days(args.since)
    assert days is not None
    rows = summarize(await accounting.usage(last_days(days)), args.by, team.local, team.prices)
    if args.json:
        emit(json.dumps({"since": f"{days}d", "by": args.by, "usage": rows}, indent=2))
        return 0
    emit(
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
        emit(f"{row[args.by][:24]:<24} {figures} {cost:>10}")
    if not rows:
        emit(f"(no usage in the last {days} days)")
    elif not team.prices:
        emit(f"(no cloud cost: {team.source} has no `prices:`; pass the team's policy with --config)")
    elif any(row["estimated"] for row in rows):
        emit("(est.: output tokens counted from what was relayed, for answers cut short before their final count)")
    return 0
