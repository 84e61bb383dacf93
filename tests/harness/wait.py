"""Waiting for a condition, never for a duration: the suite runs on slow, busy machines too."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# Deadlines are generous: they only bound how long a broken run takes to fail, and a loaded
# 2-core machine is many times slower than an idle one. CCGATE_TEST_PATIENCE scales them.
PATIENCE = float(os.environ.get("CCGATE_TEST_PATIENCE", "1"))


def wait_until(condition: Callable[[], T], what: str, within: float = 60.0, every: float = 0.1) -> T:
    """Call `condition` until it returns something truthy, and return that; fail saying `what`."""
    deadline = time.monotonic() + within * PATIENCE
    last: T | None = None
    while True:
        try:
            last = condition()
        except AssertionError:
            last = None
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {within * PATIENCE:g}s waiting until {what}")
        time.sleep(every)


async def wait_until_async(
    condition: Callable[[], T | Awaitable[T]], what: str, within: float = 60.0, every: float = 0.005
) -> T:
    """wait_until for a test on the event loop: the loop runs (servers, transports) between looks.
    `condition` may be a coroutine function (a look that asks Redis, say)."""
    import asyncio
    import inspect

    async def look() -> T:
        got = condition()
        return await got if inspect.isawaitable(got) else got  # type: ignore[return-value]

    deadline = time.monotonic() + within * PATIENCE
    while not (last := await look()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {within * PATIENCE:g}s waiting until {what}")
        await asyncio.sleep(every)
    return last
