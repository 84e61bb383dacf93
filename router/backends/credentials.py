"""Which credentials go to an upstream: its own key, or the client's own, as `auth:` says."""

from __future__ import annotations

from collections.abc import Mapping

from router.config import BackendConfig

CLIENT_CREDENTIALS = ("x-api-key", "authorization")


def credentials(config: BackendConfig, client: Mapping[str, str]) -> dict[str, str]:
    """The upstream's credentials: its own key, or the client's own (a teammate's subscription)."""
    auth = config.effective_auth
    if auth == "key" or (auth == "auto" and config.api_key):
        if not config.api_key:
            return {}
        if config.kind == "anthropic":
            return {"x-api-key": config.api_key}
        return {"authorization": f"Bearer {config.api_key}"}
    if auth in ("auto", "passthrough"):
        return {key: client[key] for key in CLIENT_CREDENTIALS if client.get(key)}
    return {}


def own_credentials(config: BackendConfig) -> dict[str, str]:
    """What ccgate itself sends when it asks the backend something (probes, doctor): never a
    client's credentials, only the backend's own key when `auth:` lets it be sent."""
    return credentials(config, {})
