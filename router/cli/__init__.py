"""The `ccgate` command: one module per command (serve, keys, usage, doctor, explain)."""

from __future__ import annotations

import argparse
import sys

from router import __version__
from router.cli import doctor, explain, keys, serve, usage


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccgate", description="Gateway between coding agents and model backends.")
    parser.add_argument("--version", action="version", version=f"ccgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in (serve, keys, usage, explain, doctor):
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
