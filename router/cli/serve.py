"""`ccgate serve`: check the settings and the policy, then run the gateway."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router.config import Settings
from router.policy.loader import PolicyError, load_policy
from router.telemetry.logs import configure_logging


def add_parser(commands: argparse._SubParsersAction) -> None:
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
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
        from router.server.workers import supervise

        return supervise(settings, policy)

    from router.server.app import create_app
    from router.server.shutdown import serve

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
