"""`GET /metrics`: Prometheus text exposition of this process's registry."""

from __future__ import annotations

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from router.telemetry.metrics import Metrics


@get("/metrics")
async def prometheus_metrics(request: Request) -> Response[bytes]:
    metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
