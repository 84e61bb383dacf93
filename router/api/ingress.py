"""One request's way through the edge, whatever its dialect: who asks, what they ask (converted
once into the canonical request), the route, and the answer in the caller's own shape."""

from __future__ import annotations

import logging
import time

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Stream
from opentelemetry import trace

from router.api.auth import Refused, identify, upstream_query
from router.api.dialects import Dialect
from router.api.errors import on_dispatch_failed, on_refused, with_trace_id
from router.api.replies import ClientGone, to_response, unless_client_leaves
from router.api.request_log import refusal_level, request_line
from router.backends.base import Incoming
from router.dispatch import DispatchFailed, Operation
from router.gateway import Gateway
from router.policy.features import client_kind
from router.policy.identity import Identity
from router.protocol.anthropic import CountTokensRequest, InvalidRequest, MessagesRequest, validate
from router.protocol.errors import BadUpstreamResponse
from router.telemetry import record
from router.telemetry.metrics import Metrics
from router.telemetry.tracing import trace_id

CLIENT_CLOSED = 499  # nginx's "client closed request": nobody is left to read it


async def handle(
    request: Request, dialect: Dialect, kind: type[MessagesRequest] | type[CountTokensRequest], op: Operation
) -> Response | Stream:
    gateway: Gateway = request.app.state.gateway
    metrics: Metrics = request.app.state.metrics
    client = client_kind(request.headers.get("user-agent", ""))
    started = time.perf_counter()
    span = gateway.tracer.start_span(
        f"POST {request.url.path}",
        kind=trace.SpanKind.SERVER,
        attributes={
            "http.request.method": "POST",
            "url.path": request.url.path,
            "ccgate.client": client,
            "ccgate.dialect": dialect.name,
        },
    )
    with trace.use_span(span, end_on_exit=False):
        try:
            identity, headers = await identify(request)
        except Refused as refused:
            record.refused(metrics, refused.status, client)
            _end_failed(span, refused.status, refused.message)
            _log_refused(
                request,
                started,
                op,
                refused.status,
                refused.reason,
                refused.message,
                client,
                dialect,
                span,
                key=refused.key,
            )
            return with_trace_id(refused.response(dialect.openai), span)
        if identity is not None:
            span.set_attribute("ccgate.team", identity.team)
        try:
            body = await request.body()
            parsed = dialect.parse(body)
            canonical = validate(parsed.canonical, kind)
            native = parsed.client if dialect.name == "chat" else None
            query = upstream_query(request.url.query or "")
            incoming = Incoming(
                canonical, parsed.canonical, parsed.body, headers, query, native=native, dialect=dialect.name
            )
        except (InvalidRequest, HTTPException) as exc:
            status = exc.status_code if isinstance(exc, HTTPException) else 400
            response = on_refused(request, exc)
            said = response.content["error"]["message"]
            _end_failed(span, status, said)
            reason = "too large" if status == 413 else "invalid request"
            _log_refused(request, started, op, status, reason, said, client, dialect, span, identity)
            return with_trace_id(response, span)
        try:
            outcome = await unless_client_leaves(request, gateway.route(incoming, op, identity))
        except ClientGone:
            record.client_gone(metrics, client)
            span.set_attribute("error.type", "client_gone")
            span.end()
            _log_refused(
                request,
                started,
                op,
                CLIENT_CLOSED,
                "client gone",
                "client left before the answer started; upstream request cancelled",
                client,
                dialect,
                span,
                identity,
                incoming=incoming,
            )
            return Response(b"", status_code=CLIENT_CLOSED)
        except DispatchFailed as failure:
            record.failed(metrics, failure, client)
            reason = failure.error_type or f"HTTP {failure.status}"
            return _failed(request, started, op, failure, reason, client, dialect, span, identity, incoming)
        record.answered(metrics, outcome, client, started)
        try:
            outcome.reply = dialect.answer(outcome.reply, parsed)
        except BadUpstreamResponse as exc:
            await outcome.reply.aclose()
            failure = DispatchFailed(502, f"{outcome.backend}: {exc}", None, outcome.rule, outcome.fallbacks)
            return _failed(request, started, op, failure, "HTTP 502", client, dialect, span, identity, incoming)
        span.set_attributes(
            {
                "http.response.status_code": outcome.reply.status,
                "ccgate.backend": outcome.backend,
                "ccgate.passthrough": outcome.reply.passthrough,
            }
        )
        if outcome.reply.streaming:
            outcome.reply.on_close.append(span.end)
        else:
            span.end()
    elapsed_ms = (time.perf_counter() - started) * 1000
    request_line(
        logging.INFO,
        "{} {} -> {} (rule {}){}: {} in {:.0f} ms{}".format(
            op,
            incoming.request.model,
            outcome.backend,
            outcome.rule,
            f" after [{'; '.join(outcome.fallbacks)}]" if outcome.fallbacks else "",
            outcome.reply.status,
            elapsed_ms,
            " to first byte" if outcome.reply.streaming else "",
        ),
        op=op,
        method="POST",
        path=request.url.path,
        model=incoming.request.model,
        rule=outcome.rule,
        backend=outcome.backend,
        slot=outcome.slot if outcome.slot >= 0 else None,
        reused_tokens=outcome.choice.reused if outcome.choice else 0,
        status=outcome.reply.status,
        stream=outcome.reply.streaming,
        ms=round(elapsed_ms, 1),
        fallbacks=outcome.fallbacks,
        handoff=outcome.handoff.describe() if outcome.handoff else None,
        client=client,
        dialect=dialect.name,
        passthrough=outcome.reply.passthrough,
        key=identity.key if identity else None,
        team=identity.team if identity else None,
        trace_id=trace_id(span),
    )
    request.state.open_reply = outcome.reply  # closed by on_unexpected should sending the answer fail
    return with_trace_id(to_response(outcome), span)


def _log_refused(
    request: Request,
    started: float,
    op: str,
    status: int,
    reason: str,
    message: str,
    client: str,
    dialect: Dialect,
    span: trace.Span,
    identity: Identity | None = None,
    failure: DispatchFailed | None = None,
    incoming: Incoming | None = None,
    key: str | None = None,
) -> None:
    """A request not answered by a backend is one log line too, with the fields an answered one has."""
    request_line(
        refusal_level(status),
        f"{op} refused: {status} {reason}: {message}",
        op=op,
        method="POST",
        path=request.url.path,
        status=status,
        reason=reason,
        message=message,
        model=incoming.request.model if incoming is not None else None,
        rule=failure.rule if failure is not None else None,
        ms=round((time.perf_counter() - started) * 1000, 1),
        fallbacks=failure.fallbacks if failure is not None else [],
        client=client,
        dialect=dialect.name,
        key=identity.key if identity else key,
        team=identity.team if identity else None,
        trace_id=trace_id(span),
    )


def _failed(
    request: Request,
    started: float,
    op: str,
    failure: DispatchFailed,
    reason: str,
    client: str,
    dialect: Dialect,
    span: trace.Span,
    identity: Identity | None,
    incoming: Incoming,
) -> Response:
    """A request that reached dispatch and failed: its span ended, its line, its error answer."""
    _end_failed(span, failure.status, failure.message)
    _log_refused(
        request,
        started,
        op,
        failure.status,
        reason,
        failure.message,
        client,
        dialect,
        span,
        identity,
        failure,
        incoming,
    )
    return with_trace_id(on_dispatch_failed(request, failure), span)


def _end_failed(span: trace.Span, status: int, message: str) -> None:
    span.set_attribute("http.response.status_code", status)
    span.set_status(trace.Status(trace.StatusCode.ERROR, message))
    span.end()
