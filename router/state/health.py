"""Backend health: polled in the background, and marked down at once by a refused request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import suppress

from router.backends.base import Backend
from router.policy.engine import BackendStatus

log = logging.getLogger("ccgate.health")


class HealthBoard:
    """The latest health of every backend, as the engine reads it (a plain snapshot)."""

    def __init__(self, backends: Mapping[str, Backend], interval: float = 1.0) -> None:
        self.backends = backends
        self.interval = interval
        self._status: dict[str, BackendStatus] = {name: BackendStatus() for name in backends}
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> dict[str, BackendStatus]:
        return dict(self._status)

    def mark(self, name: str, healthy: bool, detail: str = "") -> None:
        previous = self._status.get(name)
        self._status[name] = BackendStatus(healthy, detail)
        if previous is None or previous.healthy != healthy:
            log.info("backend %s is %s%s", name, "up" if healthy else "down", f" ({detail})" if detail else "")

    async def check_all(self) -> None:
        results = await asyncio.gather(*(b.health() for b in self.backends.values()), return_exceptions=True)
        for name, result in zip(self.backends, results, strict=True):
            if isinstance(result, BaseException):
                self.mark(name, False, f"health check failed: {type(result).__name__}")
            else:
                self.mark(name, *result)

    def start(self) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="ccgate-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self.interval)
