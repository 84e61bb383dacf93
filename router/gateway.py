"""The running gateway: the policy, its backends and their health, and one request's route."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from router.backends.base import Backend, Incoming
from router.backends.registry import build_backends
from router.dispatch import Operation, Outcome, dispatch
from router.policy.engine import Engine
from router.policy.features import features_of
from router.policy.schema import Policy
from router.state.poller import Poller
from router.state.store import BreakerSettings, MemoryState


class Gateway:
    def __init__(self, policy: Policy, poll_interval: float = 1.0) -> None:
        self.policy = policy
        self.engine = Engine(policy)
        self.backends: dict[str, Backend] = build_backends(policy)
        breakers = {n: BreakerSettings(c.breaker.failures, c.breaker.cooldown) for n, c in policy.backends.items()}
        self.store = MemoryState(self.backends, breakers)
        self.poller = Poller(self.backends, self.store, interval=poll_interval)

    async def start(self) -> None:
        await self.poller.poll_once()
        self.poller.start()

    async def stop(self) -> None:
        await self.poller.stop()
        for backend in self.backends.values():
            await backend.aclose()

    async def route(self, incoming: Incoming, operation: Operation) -> Outcome:
        features = features_of(incoming.request, incoming.raw, incoming.headers)
        decision = self.engine.decide(features, self.store.snapshot())
        return await dispatch(decision, self.backends, self.store, incoming, operation)

    def describe(self) -> list[str]:
        """Start-up lines a person reads: where each rule sends requests and what is up."""
        snapshot = self.store.snapshot()
        lines = [f"rule {r.name}: {' -> '.join(r.to)}" for r in self.policy.rules]
        for name, backend in self.backends.items():
            config = backend.config
            status = snapshot[name]
            state = (status.detail or "up") if status.healthy else f"DOWN ({status.detail})"
            auth = {
                "auto": "own key, else the client's" if config.api_key else "the client's own credentials",
                "key": "own key" if config.api_key else "no credentials",
                "passthrough": "the client's own credentials",
                "none": "no credentials",
            }[config.effective_auth]
            lines.append(
                f"backend {name}: {config.kind}/{config.wire_dialect} at {safe_url(config.url)}, {auth}: {state}"
            )
        return lines

    def ready(self) -> bool:
        """Ready when at least one backend looks healthy."""
        return any(s.healthy for s in self.store.snapshot().values())


def safe_url(url: str) -> str:
    """The URL without any user:password part, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
