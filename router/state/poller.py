"""Polls every backend in the background and hands what it finds to the state store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import suppress

from router.backends.base import Backend, Probe
from router.state.store import StateStore

log = logging.getLogger("ccgate.poller")


class Poller:
    def __init__(self, backends: Mapping[str, Backend], store: StateStore, interval: float = 1.0) -> None:
        self.backends = backends
        self.store = store
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def poll_once(self, everyone: bool = False) -> None:
        """`everyone`: check even backends that are only checked when suspect (at start-up, so
        the first lines a person reads tell the truth about each)."""
        backends = dict(self.backends)
        ours = {name: self.store.ours(name) for name in backends}
        results = await asyncio.gather(
            *(b.probe(suspect=everyone or self.store.suspect(n)) for n, b in backends.items()), return_exceptions=True
        )
        for name, result in zip(backends, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("probing backend %s failed: %r", name, result)
                result = Probe(False, f"probe failed: {type(result).__name__}")
            self.store.observe(name, result, ours[name])

    def start(self) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="ccgate-poller")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.poll_once()
