"""Build the Backend for each entry of a policy's `backends:`."""

from __future__ import annotations

from router.backends.anthropic_wire import AnthropicWireBackend, LlamaCppBackend
from router.backends.base import Backend
from router.backends.openai_wire import OpenAIWireBackend
from router.config import BackendConfig
from router.policy.schema import Policy


def build_backend(name: str, config: BackendConfig) -> Backend:
    if config.wire_dialect == "openai":
        return OpenAIWireBackend(name, config)
    if config.kind == "llamacpp":
        return LlamaCppBackend(name, config)
    return AnthropicWireBackend(name, config)


def build_backends(policy: Policy) -> dict[str, Backend]:
    return {name: build_backend(name, config) for name, config in policy.backends.items()}
