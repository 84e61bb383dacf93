"""The poller against a policy reload: what a probe of the server a backend name used to point at
found is not taken for the new one's (seen as a burst of 529 "busy 2/2" in test_reload)."""

from __future__ import annotations

import asyncio
from typing import Any

from router.backends.base import Probe
from router.state.poller import Poller
from router.state.store import MemoryState


class Backend:
    """A stand-in: only what the poller calls (`probe`, `config.url`)."""

    def __init__(self, url: str, probe: Probe, gate: asyncio.Event | None = None) -> None:
        self.config: Any = type("Config", (), {"url": url})()
        self._probe, self._gate = probe, gate
        self.out = asyncio.Event()  # set once a probe was sent

    async def probe(self, suspect: bool = False) -> Probe:
        self.out.set()
        if self._gate is not None:
            await self._gate.wait()
        return self._probe


async def test_a_probe_of_a_replaced_backend_is_dropped() -> None:
    gate = asyncio.Event()
    busy = Probe(True, processing=2, slots=2)  # the old server, both slots on requests of the old config
    old = Backend("http://old:8080", busy, gate)
    store = MemoryState(["local"])
    poller = Poller({"local": old}, store)
    polling = asyncio.create_task(poller.poll_once())
    await asyncio.wait_for(old.out.wait(), 10)  # the probe is out
    new = Backend("http://new:8080", Probe(True, "not probed", checked=False))
    store.configure(["local"], {}, changed=["local"])  # what Gateway.reload does
    poller.backends = {"local": new}
    gate.set()
    await polling
    state = store.snapshot()["local"]
    assert state.slots is None and state.foreign == 0, state
    await poller.poll_once()  # the new one's own probes count as ever
    assert store.snapshot()["local"].detail == "not probed"


async def test_a_request_begun_and_ended_while_the_probe_was_out_is_ours() -> None:
    store = MemoryState(["local"])

    class Seen(Backend):
        async def probe(self, suspect: bool = False) -> Probe:
            end = store.begin("local")  # one of ours starts after the probe went out...
            try:
                return Probe(True, processing=1, slots=1)  # ...the server reports it...
            finally:
                end()  # ...and it is over before the report is read

    poller = Poller({"local": Seen("http://box:8080", Probe(True))}, store)
    await poller.poll_once()
    state = store.snapshot()["local"]
    assert state.foreign == 0 and state.available, state
