"""The marking secret: CCGATE_SECRET, else this install's own file, made once, private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from router.state.secret import local_secret


def test_the_install_file_is_made_once_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CCGATE_SECRET", raising=False)
    monkeypatch.setenv("CCGATE_STATE_DIR", str(tmp_path / "state"))
    first = local_secret()
    assert len(first) == 64 and local_secret() == first  # a restart signs the same way
    mode = (tmp_path / "state" / "secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCGATE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CCGATE_SECRET", "team-wide-secret")
    assert local_secret() == b"team-wide-secret"
    assert not (tmp_path / "secret").exists()
