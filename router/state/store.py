"""The state interface the gateway writes to and the engine reads from (via snapshots).

One implementation lives here, in memory, for a single process; the [prefix-cache] issue adds
a Redis one behind the same methods so that replicas share in-flight counts and breakers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from router.backends.base import Probe
from router.policy.snapshot import BackendSnapshot

log = logging.getLogger("ccgate.state")


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failures: int = 3  # consecutive failures that open it
    cooldown: float = 10.0  # seconds open before one probe request is let through


class StateStore(Protocol):
    def snapshot(self) -> dict[str, BackendSnapshot]: ...

    def observe(self, backend: str, probe: Probe) -> None: ...

    def begin(self, backend: str) -> None: ...

    def end(self, backend: str) -> None: ...

    def succeeded(self, backend: str) -> None: ...

    def failed(self, backend: str, reason: str, unreachable: bool = False) -> None: ...


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    opened_at: float | None = None


class MemoryState:
    """All state in this process: the default, and what `ccgate serve` uses without Redis."""

    def __init__(
        self,
        backends: Iterable[str],
        breakers: dict[str, BreakerSettings] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = list(backends)
        self._probes: dict[str, BackendSnapshot] = {n: BackendSnapshot() for n in names}
        self._in_flight: dict[str, int] = dict.fromkeys(names, 0)
        self._breakers: dict[str, _Breaker] = {n: _Breaker() for n in names}
        self._settings = breakers or {}
        self._clock = clock

    def snapshot(self) -> dict[str, BackendSnapshot]:
        return {
            name: replace(probe, in_flight=self._in_flight[name], breaker=self._breaker_state(name))
            for name, probe in self._probes.items()
        }

    def observe(self, backend: str, probe: Probe) -> None:
        before = self._probes[backend]
        if before.healthy != probe.healthy:
            log.info(
                "backend %s is %s%s",
                backend,
                "up" if probe.healthy else "down",
                f" ({probe.detail})" if probe.detail else "",
            )
        self._probes[backend] = BackendSnapshot(
            healthy=probe.healthy,
            detail=probe.detail,
            processing=probe.processing,
            deferred=probe.deferred,
            slots=probe.slots,
            n_ctx=probe.n_ctx,
            kv_cache=probe.kv_cache,
        )

    def begin(self, backend: str) -> None:
        self._in_flight[backend] += 1

    def end(self, backend: str) -> None:
        self._in_flight[backend] = max(0, self._in_flight[backend] - 1)

    def succeeded(self, backend: str) -> None:
        breaker = self._breakers[backend]
        if breaker.opened_at is not None:
            log.info("breaker of backend %s closed", backend)
        breaker.failures, breaker.opened_at = 0, None

    def failed(self, backend: str, reason: str, unreachable: bool = False) -> None:
        breaker = self._breakers[backend]
        breaker.failures += 1
        settings = self._settings.get(backend, BreakerSettings())
        if breaker.failures >= settings.failures or breaker.opened_at is not None:
            if breaker.opened_at is None:
                log.warning(
                    "breaker of backend %s opened after %d failures (last: %s)", backend, breaker.failures, reason
                )
            breaker.opened_at = self._clock()
        if unreachable:
            self.observe(backend, Probe(False, reason))

    def _breaker_state(self, name: str) -> str:
        opened = self._breakers[name].opened_at
        if opened is None:
            return "closed"
        cooldown = self._settings.get(name, BreakerSettings()).cooldown
        return "open" if self._clock() - opened < cooldown else "half_open"
