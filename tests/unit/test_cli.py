"""`ccgate check-policy` and `ccgate serve` refuse a bad policy with a precise message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BAD = (
    "backends:\n  local:\n    kind: llamacpp\n    url: http://x\n    colour: red\nrules:\n  - {name: d, to: [local]}\n"
)


def ccgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router.cli", *args], capture_output=True, text=True, timeout=60)


def test_check_policy(tmp_path: Path) -> None:
    ok = ccgate("check-policy", str(Path(__file__).resolve().parents[2] / "policies" / "default.yaml"))
    assert ok.returncode == 0 and "2 backends, 1 rules" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    done = ccgate("check-policy", str(bad))
    assert done.returncode == 1
    assert f"{bad}:5: backends.local: Object contains unknown field `colour`" in done.stderr


def test_serve_refuses_a_bad_policy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    done = ccgate("serve", "--config", str(bad), "--port", "1")
    assert done.returncode == 2
    assert "unknown field `colour`" in done.stderr
    assert "Traceback" not in done.stderr


def test_settings_from_environment_and_flags() -> None:
    from router.config import Settings

    env = {
        "CCGATE_CONFIG": "/etc/p.yaml",
        "CCGATE_HOST": "0.0.0.0",
        "CCGATE_PORT": "4100",
        "CCGATE_MAX_BODY_BYTES": "99",
    }
    settings = Settings.from_env(env)
    assert (settings.host, settings.port, settings.max_body_bytes) == ("0.0.0.0", 4100, 99)
    assert settings.policy_path == Path("/etc/p.yaml")
    flagged = Settings.from_env(env, port=5000, config=Path("/x.yaml"))
    assert (flagged.port, flagged.policy_path) == (5000, Path("/x.yaml"))
    assert Settings.from_env({}).port == 4000 and Settings.from_env({}).policy_path is None


def test_the_shutdown_grace_is_read_and_checked() -> None:
    from router.config import Settings

    assert Settings.from_env({}).shutdown_grace == 30.0
    assert Settings.from_env({"CCGATE_SHUTDOWN_GRACE": "2.5"}).shutdown_grace == 2.5
    for bad in ("-1", "soon"):
        with pytest.raises(ValueError, match="invalid setting"):
            Settings.from_env({"CCGATE_SHUTDOWN_GRACE": bad})


def test_a_reader_that_stops_early_ends_the_output_quietly() -> None:
    """`ccgate explain ... | head -1`, `ccgate doctor --json | head`: a closed pipe is how a reader
    says it has enough; no BrokenPipeError traceback (and no 'cannot use Redis' for it)."""
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "claude-code-request-turn1.json"
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        done = subprocess.run(
            [sys.executable, "-m", "router.cli", "explain", str(fixture), "--json"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert done.returncode == 0
