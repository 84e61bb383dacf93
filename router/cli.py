"""The `ccgate` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router import __version__
from router.policy.loader import PolicyError, load_policy
from router.settings import Settings
from router.telemetry.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ccgate", description="Gateway between coding agents and model backends.")
    parser.add_argument("--version", action="version", version=f"ccgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument(
        "--config", type=Path, help="policy file (env CCGATE_CONFIG; default: built-in policies/default.yaml)"
    )
    serve.add_argument("--host", help="address to listen on (env CCGATE_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (env CCGATE_PORT; default 4000)")
    serve.add_argument(
        "--workers", type=int, help="processes answering on the port (env CCGATE_WORKERS; default 1; about one a core)"
    )
    serve.add_argument(
        "--allow-open",
        action="store_true",
        help="serve without team keys on a non-loopback address, on purpose (env CCGATE_ALLOW_OPEN=1)",
    )

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
        sub.add_argument("--config", type=Path, help="policy file (for state.redis_url / key_prefix)")

    usage = commands.add_parser(
        "usage", help="tokens per key, team, backend or model: local share, cloud cost (needs REDIS_URL)"
    )
    usage.add_argument("--since", default="7d", help="how many days back: 7d, 30d (default 7d)")
    usage.add_argument("--by", choices=["key", "team", "backend", "model"], default="key")
    usage.add_argument("--json", action="store_true")
    usage.add_argument("--config", type=Path, help="policy file (for state.redis_url / key_prefix)")

    check = commands.add_parser("check-policy", help="validate a policy file and exit")
    check.add_argument("file", type=Path)

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

    doctor = commands.add_parser(
        "doctor", help="check that each backend is up and really does tool calling, with a fix for each failure"
    )
    doctor.add_argument("--config", type=Path, help="policy file (default: as for serve)")
    doctor.add_argument("--backend", action="append", help="only this backend (repeatable)")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per probe request (a cold CPU model is slow)"
    )

    args = parser.parse_args(argv)
    if args.command in ("keys", "usage"):
        from router.team_cli import run_team_command

        return run_team_command(args)
    if args.command == "doctor":
        return _doctor(args)
    if args.command == "check-policy":
        return _check_policy(args.file)
    if args.command == "explain":
        return _explain(args)
    return _serve(args)


def _doctor(args: argparse.Namespace) -> int:
    """Exit 0 when every check passes (warnings allowed), 1 when one fails, 2 on bad usage."""
    import asyncio
    import json

    from router.doctor.report import as_json, render, run

    try:
        settings = Settings.from_env(config=args.config)
        policy = load_policy(settings.policy_path)
    except (PolicyError, ValueError, OSError) as exc:
        print(f"ccgate doctor: {exc}", file=sys.stderr)
        return 2
    names = args.backend or list(policy.backends)
    unknown = [name for name in names if name not in policy.backends]
    if unknown:
        known = ", ".join(policy.backends)
        print(f"ccgate doctor: no backend named {', '.join(unknown)} (the policy has: {known})", file=sys.stderr)
        return 2
    keys = (settings.auth or policy.auth or "open") == "keys"
    reports = asyncio.run(run(policy, names, args.timeout, keys))
    print(json.dumps(as_json(reports), indent=2) if args.json else render(reports))
    return 0 if all(report.ok for report in reports) else 1


def _check_policy(path: Path) -> int:
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(policy.backends)} backends, {len(policy.rules)} rules)")
    return 0


def _explain(args: argparse.Namespace) -> int:
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
    print(json.dumps(explained, indent=2) if args.json else render(explained))
    return 0


async def _live_state(policy: object) -> dict:
    from router.gateway import Gateway

    gateway = Gateway(policy, poll_interval=0)  # type: ignore[arg-type]
    try:
        await gateway.poller.poll_once()
        return gateway.store.snapshot()
    finally:
        await gateway.stop()


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(
            config=args.config,
            host=args.host,
            port=args.port,
            allow_open=True if args.allow_open else None,
            workers=args.workers,
        )
        policy = load_policy(settings.policy_path)
    except (PolicyError, ValueError) as exc:
        print(f"ccgate: {exc}", file=sys.stderr)
        return 2
    mode = settings.auth or policy.auth or "open"
    if mode not in ("keys", "open"):
        print(f"ccgate: CCGATE_AUTH must be keys or open, not {mode!r}", file=sys.stderr)
        return 2
    if mode == "open" and not _loopback(settings.host) and not settings.allow_open:
        print(
            f"ccgate: refusing to serve {settings.host or 'every interface'} without team keys: anyone who "
            "reaches it would spend the team's cloud key and GPU. Set CCGATE_AUTH=keys (with REDIS_URL), or "
            "--allow-open if that is what you want.",
            file=sys.stderr,
        )
        return 2
    if mode == "keys" and not (settings.redis_url or policy.state.redis_url):
        print("ccgate: CCGATE_AUTH=keys keeps its keys and usage in Redis: set REDIS_URL", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if problem := _redis_problem(settings.redis_url or policy.state.redis_url):
        print(f"ccgate: {problem}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        from router.workers import supervise

        return supervise(settings, policy)

    from router.app import create_app
    from router.shutdown import serve

    try:
        app = create_app(settings, policy)
    except ValueError as exc:
        print(f"ccgate: {exc}", file=sys.stderr)
        return 2

    def drain() -> None:
        app.state.draining = True

    serve(app, settings, drain)
    return 0


def _redis_problem(url: str | None) -> str | None:
    """What makes REDIS_URL unusable, said before serving: a URL that names no Redis, or a Redis
    Cluster. A Redis that is down is not one: the gateway starts and routes on its own state."""
    if not url:
        return None
    import asyncio

    from router.state.redis_client import ClusterRefused, RedisUrlError, refuse_cluster

    try:
        asyncio.run(refuse_cluster(url))
    except (RedisUrlError, ClusterRefused) as exc:
        return str(exc)
    return None


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True  # an empty host is every interface, not this machine's loopback
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
