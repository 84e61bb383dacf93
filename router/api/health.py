"""Probes: `HEAD /` (Claude Code sends it first), `/healthz` (alive), `/readyz` (can serve)."""

from __future__ import annotations

from litestar import Request, Response, get, head

from router import __version__
from router.api.auth import credential_warnings
from router.gateway import Gateway
from router.policy.engine import slot_files_state


@head("/", status_code=200)
async def probe_head() -> None:
    return None


@get("/")
async def index() -> dict:
    return {
        "name": "ccgate",
        "version": __version__,
        "api": ["/v1/messages", "/v1/messages/count_tokens", "/v1/chat/completions", "/v1/responses", "/v1/models"],
    }


@get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@get("/readyz")
async def readyz(request: Request) -> Response[dict]:
    gateway: Gateway = request.app.state.gateway
    backends = {
        name: {
            "healthy": s.healthy,
            "available": s.available,
            "detail": s.detail,
            "breaker": s.breaker,
            "breaker_detail": s.breaker_detail,
            "queue_depth": s.queue_depth,
            "slots": s.slots,
            **({"slot_files": files} if (files := slot_files_state(gateway.policy.backends.get(name), s)) else {}),
        }
        for name, s in gateway.snapshot().items()
    }
    warnings = credential_warnings(request.app.state.settings, gateway.policy)
    if request.app.state.get("draining"):  # SIGTERM: finishing what is in flight (router/server/shutdown.py)
        return Response({"status": "draining", "backends": backends, "warnings": warnings}, status_code=503)
    ready = gateway.ready()
    status = "ready" if ready else "unavailable"
    return Response({"status": status, "backends": backends, "warnings": warnings}, status_code=200 if ready else 503)
