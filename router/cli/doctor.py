"""`ccgate doctor`: is each backend up, and does it really call tools? With a fix for each failure."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from router.cli.output import emit
from router.config import Settings
from router.policy.loader import PolicyError, load_policy


def add_parser(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser(
        "doctor", help="check that each backend is up and really does tool calling, with a fix for each failure"
    )
    doctor.add_argument("--config", type=Path, help="policy file (default: as for serve)")
    doctor.add_argument("--backend", action="append", help="only this backend (repeatable)")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per probe request (a cold CPU model is slow)"
    )
    doctor.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
    emit(json.dumps(as_json(reports), indent=2) if args.json else render(reports))
    return 0 if all(report.ok for report in reports) else 1
