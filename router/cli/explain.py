"""`ccgate explain` and `ccgate check-policy`: what the policy file says, without serving it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router.cli.output import emit
from router.config import Settings
from router.policy.loader import PolicyError, load_policy


def add_parser(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser("check-policy", help="validate a policy file and exit")
    check.add_argument("file", type=Path)
    check.set_defaults(run=check_policy)

    explain = commands.add_parser("explain", help="show where a request would go, and why")
    explain.add_argument("request", type=Path, help="a request body, or a capture with `headers` and `body`")
    explain.add_argument("--config", type=Path, help="policy file (default: as for serve)")
    explain.add_argument(
        "--state",
        choices=["idle", "live"],
        default="idle",
        help="idle: every backend up and free; live: probe them now",
    )
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.set_defaults(run=run)


def check_policy(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    emit(f"{args.file}: ok ({len(policy.backends)} backends, {len(policy.rules)} rules)")
    return 0


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json

    import msgspec

    from router.api.dialects import dialect_for
    from router.policy.engine import Engine
    from router.policy.explain import explain, render
    from router.policy.features import features_of
    from router.protocol.anthropic import InvalidRequest, MessagesRequest, validate

    try:
        settings = Settings.from_env(config=args.config)
        policy = load_policy(settings.policy_path)
        loaded = json.loads(args.request.read_text())
        capture = isinstance(loaded, dict) and isinstance(loaded.get("body"), dict)
        body = loaded["body"] if capture else loaded
        headers = {k.lower(): v for k, v in (loaded.get("headers") or {}).items()} if capture else {}
        dialect = dialect_for(loaded.get("path") if capture else None, body)
        parsed = dialect.parse(msgspec.json.encode(body))
        raw = parsed.canonical
        request = validate(raw, MessagesRequest)
    except (PolicyError, ValueError, OSError, InvalidRequest) as exc:
        print(f"ccgate explain: {exc}", file=sys.stderr)
        return 2
    state = asyncio.run(_live_state(policy)) if args.state == "live" else {}
    explained = explain(Engine(policy), features_of(request, raw, headers), state, dialect.name, parsed.dropped_tools)
    emit(json.dumps(explained, indent=2) if args.json else render(explained))
    return 0


async def _live_state(policy: object) -> dict:
    from router.gateway import Gateway

    gateway = Gateway(policy, poll_interval=0)  # type: ignore[arg-type]
    try:
        await gateway.poller.poll_once()
        return gateway.store.snapshot()
    finally:
        await gateway.stop()
