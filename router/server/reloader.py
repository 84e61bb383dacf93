"""Hot reload: a changed policy file (or SIGHUP) swaps the policy; a bad file changes nothing."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress
from pathlib import Path

from prometheus_client import Counter

from router.gateway import Gateway
from router.policy.loader import PolicyError, load_policy

log = logging.getLogger("ccgate.reload")


class PolicyReloader:
    def __init__(self, gateway: Gateway, path: Path, interval: float = 1.0, counter: Counter | None = None) -> None:
        self.gateway = gateway
        self.counter = counter
        self.path = path
        self.interval = interval
        self._seen = self._stamp()
        self._task: asyncio.Task[None] | None = None

    def reload_now(self, why: str) -> bool:
        self._seen = self._stamp()
        try:
            policy = load_policy(self.path)
        except PolicyError as exc:
            if self.counter is not None:
                self.counter.labels("rejected").inc()
            log.error("policy reload (%s) rejected, keeping the current policy: %s", why, exc)
            return False
        self.gateway.reload(policy)
        if self.counter is not None:
            self.counter.labels("ok").inc()
        log.info(
            "policy reloaded (%s): %d backends, rules %s", why, len(policy.backends), [r.name for r in policy.rules]
        )
        return True

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        with suppress(NotImplementedError, RuntimeError, ValueError):  # no signals off the main thread
            loop.add_signal_handler(signal.SIGHUP, self.reload_now, "SIGHUP")
        if self.interval > 0:
            self._task = asyncio.create_task(self._watch(), name="ccgate-policy-watch")

    async def stop(self) -> None:
        with suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._stamp() != self._seen:
                self.reload_now("file changed")

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size
