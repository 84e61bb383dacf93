"""`GET /metrics`: Prometheus text exposition (every worker's, with `--workers`)."""

from __future__ import annotations

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from router.api.auth import metrics_refusal
from router.telemetry.metrics import Metrics


@get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    refused = metrics_refusal(request)
    if refused is not None:
        return refused
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
