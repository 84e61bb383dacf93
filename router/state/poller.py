"""Polls every backend in the background and hands what it finds to the state store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import suppress
from urllib.parse import urlsplit

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
        before = self._ours_per_server(backends)
        marks = {name: self.store.mark(name) for name in backends}
        results = await asyncio.gather(
            *(b.probe(suspect=everyone or self.store.suspect(n)) for n, b in backends.items()), return_exceptions=True
        )
        # a request begun and ended while the probe was out, in neither count, may be in its report
        during = self._ours_per_server(backends, {name: self.store.short_since(name, marks[name]) for name in backends})
        after = self._ours_per_server(backends)
        for name, result in zip(backends, results, strict=True):
            if self.backends.get(name) is not backends[name]:
                continue  # replaced by a reload meanwhile: what the old server said is not the new one's
            if isinstance(result, BaseException):
                log.warning("probing backend %s failed: %r", name, result)
                result = Probe(False, f"probe failed: {type(result).__name__}")
            self.store.observe(name, result, max(before[name], after[name]) + during[name])

    def _ours_per_server(
        self, backends: Mapping[str, Backend], begun: Mapping[str, int] | None = None
    ) -> dict[str, int]:
        """Our requests in progress on each backend's server (or, given `begun`, those counts):
        two backends may be one server (one llama-server spoken to in two dialects), whose report
        counts the requests of both."""
        servers: dict[str, int] = {}
        for name, backend in backends.items():
            server = _server(backend.config.url)
            servers[server] = servers.get(server, 0) + (self.store.ours(name) if begun is None else begun[name])
        return {name: servers[_server(backend.config.url)] for name, backend in backends.items()}

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


def _server(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()
