"""Every script a person runs answers `--help` with its usage, at once, and does nothing else:
no benchmark started, no dashboard rewritten, nothing installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    path
    for folder in ("bench", "dashboards")
    for path in (ROOT / folder).glob("*.py")
    if 'if __name__ == "__main__":' in path.read_text()
)


def test_there_are_scripts() -> None:
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(p.relative_to(ROOT)) for p in SCRIPTS])
def test_help_says_how_and_does_nothing(script: Path) -> None:
    watched = list((ROOT / "dashboards").glob("*.json"))
    before = {path: path.stat().st_mtime_ns for path in watched}
    done = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage:"), done.stdout[:300]
    assert {path: path.stat().st_mtime_ns for path in watched} == before


def test_the_test_command_has_help() -> None:
    done = subprocess.run([str(ROOT / "scripts" / "test"), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "--latest-agents" in done.stdout, done.stderr
