"""Turning a dispatch Outcome into the client's HTTP response, and watching for hang-ups."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

from litestar import Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.response import Stream

from router.api.errors import header_safe
from router.backends.base import Reply
from router.dispatch import Outcome

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class ClientGone(Exception):
    """The client hung up before its answer was ready; the upstream call was cancelled."""


async def unless_client_leaves(request: Request, work: Awaitable[Outcome]) -> Outcome:
    """Run `work` (a backend call) but cancel it the moment the client disconnects.

    Litestar cancels a streaming body when the client leaves, but not a handler still waiting
    for its backend (prompt processing can take minutes): without this, a client that gave up
    would keep a llama.cpp slot busy until the whole answer was generated.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            [late] = await asyncio.gather(task, return_exceptions=True)
            if isinstance(late, Outcome):  # it finished while being cancelled: close what it opened
                await late.reply.aclose()
            raise ClientGone
        watcher.cancel()
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def route_headers(outcome: Outcome) -> dict[str, str]:
    headers = {"x-ccgate-route": outcome.rule, "x-ccgate-backend": outcome.backend}
    if outcome.slot >= 0:
        headers["x-ccgate-slot"] = str(outcome.slot)
    if outcome.fallbacks:
        headers["x-ccgate-fallback-reason"] = header_safe("; ".join(outcome.fallbacks))
    if outcome.handoff is not None:
        headers["x-ccgate-handoff"] = header_safe(outcome.handoff.describe())
    return headers


def to_response(outcome: Outcome) -> Response[bytes] | Stream:
    reply = outcome.reply
    headers = {**reply.headers, **route_headers(outcome)}
    if reply.streaming:
        # The background close covers a client gone before the body starts: Litestar then cancels
        # the stream before `_relay` ever runs, so its `finally` would not close the upstream.
        return Stream(
            _relay(reply),
            media_type=reply.content_type,
            headers={**headers, **SSE_HEADERS},
            background=BackgroundTask(reply.aclose),
        )
    return Response(reply.body, status_code=reply.status, media_type=reply.content_type, headers=headers)


async def _relay(reply: Reply) -> AsyncIterator[bytes]:
    assert reply.rest is not None
    try:
        if reply.first:
            yield reply.first
        async for chunk in reply.rest:
            yield chunk
    finally:
        await reply.rest.aclose()  # type: ignore[attr-defined]
        await reply.aclose()
