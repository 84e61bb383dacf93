"""The `ccgate` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from router import __version__
from router.policy.loader import PolicyError, load_policy
from router.settings import Settings


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

    check = commands.add_parser("check-policy", help="validate a policy file and exit")
    check.add_argument("file", type=Path)

    args = parser.parse_args(argv)
    if args.command == "check-policy":
        return _check_policy(args.file)
    return _serve(args)


def _check_policy(path: Path) -> int:
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(policy.backends)} backends, {len(policy.rules)} rules)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(config=args.config, host=args.host, port=args.port)
        policy = load_policy(settings.policy_path)
    except (PolicyError, ValueError) as exc:
        print(f"ccgate: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    import uvicorn

    from router.app import create_app

    app = create_app(settings, policy)
    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False, lifespan="on"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
