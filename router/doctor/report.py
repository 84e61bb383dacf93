"""Doctor's output: a table a person reads in five seconds, or JSON for scripts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from router.doctor.checks import Report, examine
from router.policy.schema import Policy

MARKS = {"ok": "ok  ", "fail": "FAIL", "warn": "warn", "skip": "--  "}


async def run(policy: Policy, names: Iterable[str], probe_timeout: float, keys: bool = False) -> list[Report]:
    """`keys`: the gateway runs with team keys, so a backend that needs each client's own
    credentials is worth a warning."""
    return list(await asyncio.gather(*(examine(name, policy.backends[name], probe_timeout, keys) for name in names)))


def render(reports: list[Report]) -> str:
    lines: list[str] = []
    width = max((len(c.name) for r in reports for c in r.checks), default=10) + 2
    for report in reports:
        verdict = (
            "tool calling works"
            if report.ok and _probed(report)
            else "problems found"
            if not report.ok
            else "not probed"
        )
        lines.append(f"{report.backend} ({report.kind}, {report.url}): {verdict}")
        fixes: set[str] = set()
        for check in report.checks:
            lines.append(f"  {MARKS[check.status]}  {check.name:<{width}}{check.detail}")
            if check.fix and check.status in ("fail", "warn"):
                said = check.fix in fixes
                fixes.add(check.fix)
                lines.append(f"  {'':4}  {'':<{width}}fix: {'as above' if said else check.fix}")
        lines.append("")
    failed = sum(1 for r in reports for c in r.checks if c.status == "fail")
    lines.append("all backends pass" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines)


def as_json(reports: list[Report]) -> list[dict[str, Any]]:
    return [
        {
            "backend": r.backend,
            "kind": r.kind,
            "url": r.url,
            "ok": r.ok,
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail, "fix": c.fix} for c in r.checks],
        }
        for r in reports
    ]


def _probed(report: Report) -> bool:
    return any(c.name.startswith("tool call") for c in report.checks)
