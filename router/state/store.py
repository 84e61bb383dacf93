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

    def configure(
        self, backends: Iterable[str], breakers: dict[str, BreakerSettings], changed: Iterable[str] = ()
    ) -> None: ...

    def begin(self, backend: str) -> Callable[[], None]:
        """Count a request in progress; call what it returns, once, when it is over."""
        ...

    def learn_context(self, backend: str, n_ctx: int) -> None:
        """A backend said how big its context is (llama.cpp's exceed_context_size_error)."""
        ...

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
        self._probes: dict[str, BackendSnapshot] = {}
        self._in_flight: dict[tuple[str, int], int] = {}
        self._generation: dict[str, int] = {}
        self._learned_ctx: dict[str, int] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._settings: dict[str, BreakerSettings] = {}
        self._clock = clock
        # Told when a breaker opens (backend, seconds it stays open) or closes, to share it.
        self.on_breaker: Callable[[str, float | None], None] = lambda backend, cooldown: None
        self.configure(backends, breakers or {})

    def configure(
        self, backends: Iterable[str], breakers: dict[str, BreakerSettings], changed: Iterable[str] = ()
    ) -> None:
        """The backends of a (re)loaded policy. What was learnt about a name carries over unless
        its config `changed` (another server now): then probes and breaker start afresh."""
        for name in changed:
            self._probes.pop(name, None)
            self._learned_ctx.pop(name, None)
            self._breakers.pop(name, None)
            if name in self._generation:  # requests still on the old server count against it, not the new
                self._generation[name] += 1
        names = list(backends)
        for name in names:
            self._probes.setdefault(name, BackendSnapshot())
            self._generation.setdefault(name, 0)
            self._breakers.setdefault(name, _Breaker())
        self._settings = breakers
        self._current = names

    def snapshot(self) -> dict[str, BackendSnapshot]:
        return {
            name: replace(
                self._probes[name],
                in_flight=self._in_flight.get((name, self._generation[name]), 0),
                n_ctx=self._probes[name].n_ctx or self._learned_ctx.get(name),
                breaker=self._breaker_state(name),
            )
            for name in self._current
        }

    def observe(self, backend: str, probe: Probe) -> None:
        before = self._probes[backend]
        reported = (probe.processing or 0) + (probe.deferred or 0)
        ours = self._in_flight.get((backend, self._generation[backend]), 0)
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
            model=probe.model,
            foreign=max(0, reported - ours),
        )

    def begin(self, backend: str) -> Callable[[], None]:
        key = (backend, self._generation[backend])
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        done = False

        def end() -> None:
            nonlocal done
            if not done:
                done = True
                left = self._in_flight[key] - 1
                if left or key[1] == self._generation.get(backend):
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]  # the last request on a replaced server

        return end

    def learn_context(self, backend: str, n_ctx: int) -> None:
        self._learned_ctx[backend] = n_ctx

    def succeeded(self, backend: str) -> None:
        breaker = self._breakers[backend]
        if breaker.opened_at is not None:
            log.info("breaker of backend %s closed", backend)
            self.on_breaker(backend, None)
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
            self.on_breaker(backend, settings.cooldown)
        if unreachable:
            self.observe(backend, Probe(False, reason))

    def _breaker_state(self, name: str) -> str:
        opened = self._breakers[name].opened_at
        if opened is None:
            return "closed"
        cooldown = self._settings.get(name, BreakerSettings()).cooldown
        return "open" if self._clock() - opened < cooldown else "half_open"
