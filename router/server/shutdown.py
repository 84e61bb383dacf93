"""Graceful shutdown for `ccgate serve`: SIGTERM drains, it does not cut.

On the first SIGTERM the gateway says so at once (`/readyz` answers 503 `draining`, so a load
balancer stops sending more) but keeps serving: the requests in flight, streams included, get
up to `CCGATE_SHUTDOWN_GRACE` seconds to finish, and a request that still arrives meanwhile is
answered too. When none is left, or the grace is over, the listening socket closes (new
connections are refused) and uvicorn's own shutdown runs; what is still running then is
cancelled, which closes its upstream request and frees its llama.cpp slot. A second SIGTERM, or
SIGINT, stops at once.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from router.config import Settings
from router.server.http_limits import with_limits

log = logging.getLogger("ccgate.shutdown")
LAST_WORDS = 1.0  # seconds uvicorn gives what is left once the grace is over, before cancelling it


class DrainingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        grace: float,
        on_drain: Callable[[], None],
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.grace = grace
        self.on_drain = on_drain
        self.beat = on_tick  # called from the event loop ten times a second: a worker's heartbeat
        self.draining_since: float | None = None

    def in_flight(self) -> int:
        """Requests being answered now: each one is a task of uvicorn's until its last byte."""
        return len(self.server_state.tasks)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.draining_since is None and self.grace > 0:
            self.draining_since = time.monotonic()
            self.on_drain()
            log.info(
                "SIGTERM: draining: /readyz says 503; %d request(s) in flight get up to %gs to finish",
                self.in_flight(),
                self.grace,
            )
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.beat is not None:
            self.beat()
        if self.draining_since is not None and not self.should_exit:
            over = time.monotonic() - self.draining_since >= self.grace
            if over or self.in_flight() == 0:
                left = self.in_flight()
                log.info(
                    "drained: closing the listener%s",
                    f"; the grace is over, {left} request(s) still running are cut" if left else "",
                )
                self.should_exit = True
        return await super().on_tick(counter)


def serve(
    app: object,
    settings: Settings,
    on_drain: Callable[[], None],
    sockets: list[socket.socket] | None = None,
    on_tick: Callable[[], None] | None = None,
) -> None:
    """Serve until stopped; `sockets`: listen on these (a worker's inherited socket), not host:port;
    `on_tick`: called from the event loop every tenth of a second while it runs."""
    config = uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=LAST_WORDS,
        http=with_limits(settings.header_timeout, settings.body_timeout),
    )
    DrainingServer(config, settings.shutdown_grace, on_drain, on_tick).run(sockets=sockets)
