"""The state interface the gateway writes to and the engine reads from (via snapshots).

Health is known two ways, as Envoy's outlier detection does it. Active: the poller's probes
(llama-server's /health, a configured `health_path`). Passive: what real requests showed. A
request that could not reach its backend (refused, DNS, TLS, connect timeout) marks it
unreachable at once, and that stands until a request or an active check shows otherwise: a
backend nobody probes (the Anthropic API) is re-checked only while it is down, cheaply (see
Backend.probe's `suspect`), and a probe that says "up" within `passive_window` seconds of a
failed request does not overrule it. A streak of other failures opens the breaker.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from router.backends.base import Probe
from router.policy.snapshot import BackendSnapshot

log = logging.getLogger("ccgate.state")
ENDS_KEPT = 4096  # ended requests remembered per backend, for a probe's window (state/poller.py)
WASTED_REUSE = 3  # pinned answers in a row that reused nothing they were to, before that stops


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failures: int = 3  # consecutive failures that open it
    cooldown: float = 10.0  # seconds open before one probe request is let through


class StateStore(Protocol):
    def snapshot(self) -> dict[str, BackendSnapshot]: ...

    def observe(self, backend: str, probe: Probe, ours_before: int = 0) -> None: ...

    def suspect(self, backend: str) -> bool: ...

    def ours(self, backend: str) -> int:
        """This gateway's requests in progress on the backend now."""
        ...

    def mark(self, backend: str) -> tuple[int, int]:
        """Where the backend's running counts of requests begun and ended stand now."""
        ...

    def short_since(self, backend: str, mark: tuple[int, int]) -> int:
        """Requests begun and ended since `mark`: in progress only in between."""
        ...

    def configure(
        self, backends: Iterable[str], breakers: dict[str, BreakerSettings], changed: Iterable[str] = ()
    ) -> None: ...

    def begin(self, backend: str) -> Callable[[], None]:
        """Count a request in progress; call what it returns, once, when it is over."""
        ...

    def learn_context(self, backend: str, n_ctx: int) -> None:
        """A backend said how big its context is (llama.cpp's exceed_context_size_error)."""
        ...

    def reuse_seen(self, backend: str, reused: bool, restored: bool) -> None:
        """Whether an answer pinned to a slot reused the prompt its slot was to hold (`restored`:
        just put back from a slot file)."""
        ...

    def succeeded(self, backend: str) -> None: ...

    def failed(self, backend: str, reason: str, unreachable: bool = False) -> None: ...


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    opened_at: float | None = None  # monotonic
    opened_wall: float = 0.0  # for people: "open since 12:03:04"
    last: str = ""  # the last failure's reason


@dataclass(frozen=True, slots=True)
class _Unreachable:
    """A real request could not reach the backend."""

    at: float  # monotonic, of the latest failure
    since: float  # wall clock, of the first failure of this outage
    reason: str


def clock_time(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall))


class MemoryState:
    """All state in this process: the default, and what `ccgate serve` uses without Redis."""

    def __init__(
        self,
        backends: Iterable[str],
        breakers: dict[str, BreakerSettings] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        passive_window: float = 3.0,
        passive_hold: float | None = None,
    ) -> None:
        """`passive_window`: seconds during which a probe saying "up" does not overrule a request
        that could not connect. `passive_hold`: seconds an unreachable mark stands with nothing to
        confirm it (polling off); None: until a request or an active check shows otherwise."""
        self._probes: dict[str, BackendSnapshot] = {}
        self._unreachable: dict[str, _Unreachable] = {}
        self._down_since: dict[str, float] = {}  # wall clock since when checks find it down
        self._wall = wall
        self.passive_window = passive_window
        self.passive_hold = passive_hold
        self._in_flight: dict[tuple[str, int], int] = {}
        self._begun: dict[str, int] = {}  # requests begun on each backend, a running count
        self._ended: dict[str, int] = {}  # and ended
        self._ends: dict[str, deque[int]] = {}  # the begin numbers of the latest ended ones
        self._generation: dict[str, int] = {}
        self._learned_ctx: dict[str, int] = {}
        # (backend, restored) → pinned answers in a row that reused nothing they were to
        self._wasted: dict[tuple[str, bool], int] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._settings: dict[str, BreakerSettings] = {}
        self._clock = clock
        # Told when a llama-server restarted (its slots are empty; the files it saved are not).
        self.on_restart: Callable[[str, int | None], None] = lambda backend, slots: None
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
            self._unreachable.pop(name, None)
            self._down_since.pop(name, None)
            self._learned_ctx.pop(name, None)
            self._wasted.pop((name, True), None)
            self._wasted.pop((name, False), None)
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
        return {name: self._snapshot(name) for name in self._current}

    def _snapshot(self, name: str) -> BackendSnapshot:
        probed = self._probes[name]
        state = replace(
            probed,
            in_flight=self._in_flight.get((name, self._generation[name]), 0),
            n_ctx=probed.n_ctx or self._learned_ctx.get(name),
            slot_files_unused=self._wasted.get((name, True), 0) >= WASTED_REUSE,
            pinning_useless=self._wasted.get((name, False), 0) >= WASTED_REUSE,
            breaker=self._breaker_state(name),
        )
        down = self._current_outage(name)
        if down is not None:
            state = replace(state, healthy=False, detail=self._down_detail(down))
        if state.breaker != "closed":
            breaker = self._breakers[name]
            state = replace(
                state,
                breaker_detail=f"breaker {state.breaker.replace('_', '-')} since {clock_time(breaker.opened_wall)} "
                f"after {breaker.failures} failure{'s' if breaker.failures != 1 else ''} (last: {breaker.last})",
            )
        return state

    def suspect(self, backend: str) -> bool:
        """Down, by a real request or the last check: worth an active check even without a probe."""
        return self._current_outage(backend) is not None or not self._probes[backend].healthy

    def _current_outage(self, backend: str) -> _Unreachable | None:
        down = self._unreachable.get(backend)
        if down is not None and self.passive_hold is not None and self._clock() - down.at >= self.passive_hold:
            del self._unreachable[backend]  # nothing re-checks it: let requests try again
            return None
        return down

    @staticmethod
    def _down_detail(down: _Unreachable) -> str:
        return f"unreachable since {clock_time(down.since)}: {down.reason}"

    def ours(self, backend: str) -> int:
        return self._in_flight.get((backend, self._generation[backend]), 0)

    def mark(self, backend: str) -> tuple[int, int]:
        return self._begun.get(backend, 0), self._ended.get(backend, 0)

    def short_since(self, backend: str, mark: tuple[int, int]) -> int:
        begun, ended = mark
        recent = self._ends.get(backend, ())
        count = min(self._ended.get(backend, 0) - ended, len(recent))
        return sum(1 for seq in list(recent)[len(recent) - count :] if seq > begun)

    def observe(self, backend: str, probe: Probe, ours_before: int = 0) -> None:
        """`ours_before`: the most of our requests that can have been in progress while the probe
        was out (those in progress when it was sent, and those begun since). Its report was taken
        somewhere in between, so the larger of that and the count now is ours: a request that began
        and ended while the probe was out is not someone else's load."""
        before = self._snapshot(backend)
        if probe.restarted:
            log.warning("backend %s restarted: its slots are empty (the slot files it saved stay)", backend)
            self._wasted.pop((backend, True), None)  # perhaps restarted with --swa-full, or -np
            self._wasted.pop((backend, False), None)
            self.on_restart(backend, probe.slots)
        down = self._current_outage(backend)
        if down is not None and probe.checked:
            if not probe.healthy:
                # the probe agrees; its words are the newer ones
                self._unreachable[backend] = replace(down, reason=probe.detail or down.reason)
            elif self._clock() - down.at >= self.passive_window:
                del self._unreachable[backend]
        reported = (probe.processing or 0) + (probe.deferred or 0)
        ours = max(self.ours(backend), ours_before)
        last = self._probes[backend]
        # a probe that checked nothing leaves what the last check found
        healthy, detail = (
            (probe.healthy, probe.detail) if probe.checked else (last.healthy, last.detail or probe.detail)
        )
        if probe.checked and not healthy:
            since = self._down_since.setdefault(backend, self._wall())
            detail = f"down since {clock_time(since)}: {probe.detail}"
        elif probe.checked:
            self._down_since.pop(backend, None)
        self._probes[backend] = BackendSnapshot(
            healthy=healthy,
            detail=detail,
            processing=probe.processing,
            deferred=probe.deferred,
            slots=probe.slots,
            n_ctx=probe.n_ctx,
            kv_cache=probe.kv_cache,
            model=probe.model,
            slot_files=probe.slot_files,
            foreign=max(0, reported - ours),
        )
        self._log_change(backend, before)

    def _log_change(self, backend: str, before: BackendSnapshot) -> None:
        after = self._snapshot(backend)
        if before.healthy != after.healthy:
            if after.healthy:
                log.info("backend %s is up%s", backend, f" ({after.detail})" if after.detail else "")
            else:
                log.warning("backend %s is down (%s)", backend, after.detail or "no reason given")

    def begin(self, backend: str) -> Callable[[], None]:
        key = (backend, self._generation[backend])
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        self._begun[backend] = seq = self._begun.get(backend, 0) + 1
        done = False

        def end() -> None:
            nonlocal done
            if not done:
                done = True
                self._ended[backend] = self._ended.get(backend, 0) + 1
                self._ends.setdefault(backend, deque(maxlen=ENDS_KEPT)).append(seq)
                left = self._in_flight[key] - 1
                if left or key[1] == self._generation.get(backend):
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]  # the last request on a replaced server

        return end

    def learn_context(self, backend: str, n_ctx: int) -> None:
        self._learned_ctx[backend] = n_ctx

    def reuse_seen(self, backend: str, reused: bool, restored: bool) -> None:
        key = (backend, restored)
        wasted = self._wasted.get(key, 0)
        if wasted >= WASTED_REUSE:
            return
        self._wasted[key] = 0 if reused else wasted + 1
        if self._wasted[key] < WASTED_REUSE:
            return
        if restored:
            log.warning(
                "backend %s: %d slots restored from files in a row, and llama-server processed each prompt "
                "again: slot files are off for it. A sliding-window model (Gemma 3, gpt-oss) can reuse a "
                "restored slot only with llama-server's --swa-full",
                backend,
                WASTED_REUSE,
            )
        else:
            log.warning(
                "backend %s: %d requests in a row ran on the slot that held their prompt, and llama-server "
                "processed each again: it clears its idle slots (started without -np, its KV cache is unified "
                "and idle slots go to its RAM prompt cache). ccgate stops pinning requests to its slots, so that "
                "cache serves them; start llama-server with -np N for ccgate to pin them",
                backend,
                WASTED_REUSE,
            )

    def succeeded(self, backend: str) -> None:
        """A real request got its answer: whatever a failure said before, the backend works."""
        before = self._snapshot(backend)
        breaker = self._breakers[backend]
        if breaker.opened_at is not None:
            log.info("breaker of backend %s closed", backend)
            self.on_breaker(backend, None)
        breaker.failures, breaker.opened_at, breaker.last = 0, None, ""
        if self._unreachable.pop(backend, None) is not None:
            self._log_change(backend, before)

    def failed(self, backend: str, reason: str, unreachable: bool = False) -> None:
        """A real request failed at the backend; `unreachable`: it could not even connect."""
        before = self._snapshot(backend)
        breaker = self._breakers[backend]
        breaker.failures += 1
        breaker.last = reason
        settings = self._settings.get(backend, BreakerSettings())
        if breaker.failures >= settings.failures or breaker.opened_at is not None:
            if breaker.opened_at is None:
                log.warning(
                    "breaker of backend %s opened after %d failures (last: %s)", backend, breaker.failures, reason
                )
                breaker.opened_wall = self._wall()
            breaker.opened_at = self._clock()
            self.on_breaker(backend, settings.cooldown)
        if unreachable:
            down = self._unreachable.get(backend)
            since = down.since if down is not None else self._wall()
            self._unreachable[backend] = _Unreachable(self._clock(), since, reason)
            self._log_change(backend, before)

    def _breaker_state(self, name: str) -> str:
        opened = self._breakers[name].opened_at
        if opened is None:
            return "closed"
        cooldown = self._settings.get(name, BreakerSettings()).cooldown
        return "open" if self._clock() - opened < cooldown else "half_open"
