"""The per-install secret ccgate signs its marks with (protocol/handoff): the same for every
replica and across restarts, or a replica would not know another's marks.

Where it comes from, first found: CCGATE_SECRET; the one the replicas share in Redis (the first
replica to start writes it); a file of this install's (`$CCGATE_STATE_DIR/secret`, by default
`~/.local/state/ccgate/secret`, created 0600); else one for this process only, said in the log.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from router.state.redis_client import reason
from router.state.redis_failures import REDIS_FAILURES
from router.state.redis_shared import RedisShared
from router.state.shared import LocalShared

log = logging.getLogger("ccgate.state")


def state_dir() -> Path:
    return Path(os.environ.get("CCGATE_STATE_DIR") or Path.home() / ".local" / "state" / "ccgate")


def local_secret() -> bytes:
    """CCGATE_SECRET, else this install's file (made on first use), else a process-only one."""
    given = os.environ.get("CCGATE_SECRET")
    if given:
        return given.encode()
    path = state_dir() / "secret"
    try:
        return path.read_bytes().strip() or _write(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot read %s (%s): marks are this process's own until CCGATE_SECRET is set", path, exc)
        return secrets.token_hex(32).encode()
    try:
        return _write(path)
    except OSError as exc:
        log.warning("cannot write %s (%s): marks are this process's own until CCGATE_SECRET is set", path, exc)
        return secrets.token_hex(32).encode()


def _write(path: Path) -> bytes:
    value = secrets.token_hex(32).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(value)
    return value


async def shared_secret(shared: LocalShared, mine: bytes) -> bytes:
    """The replicas' common secret: the first one written to Redis wins (unless CCGATE_SECRET)."""
    if os.environ.get("CCGATE_SECRET") or not isinstance(shared, RedisShared):
        return mine
    key = shared.prefix + "secret"
    try:
        await shared.client.set(key, mine.decode(), nx=True)
        stored = await shared.client.get(key)
    except REDIS_FAILURES as exc:
        log.warning("cannot share the marking secret through Redis (%s): using this install's", reason(exc))
        return mine
    return str(stored).encode() if stored else mine
