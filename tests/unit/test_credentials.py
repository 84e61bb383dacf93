"""Which credentials go upstream: a backend's own key, or the client's own token, never both."""

from __future__ import annotations

import pytest

from router.backends.anthropic_wire import credentials
from router.policy.schema import BackendConfig

CLIENT = {"x-api-key": "sk-client", "authorization": "Bearer sk-client"}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (BackendConfig(kind="anthropic", url="http://a", api_key="sk-team"), {"x-api-key": "sk-team"}),
        (BackendConfig(kind="anthropic", url="http://a"), CLIENT),
        (BackendConfig(kind="anthropic", url="http://a", api_key=""), CLIENT),
        (BackendConfig(kind="anthropic", url="http://a", api_key="sk-team", auth="passthrough"), CLIENT),
        (BackendConfig(kind="anthropic", url="http://a", api_key="sk-team", auth="none"), {}),
        (BackendConfig(kind="llamacpp", url="http://a"), {}),
        (BackendConfig(kind="llamacpp", url="http://a", api_key="sk-llama"), {"authorization": "Bearer sk-llama"}),
        (BackendConfig(kind="openai", url="http://a", api_key="sk-o"), {"authorization": "Bearer sk-o"}),
        (BackendConfig(kind="openai", url="http://a"), {}),
    ],
)
def test_credentials(config: BackendConfig, expected: dict) -> None:
    assert credentials(config, CLIENT) == expected


def test_urls_in_logs_lose_their_userinfo() -> None:
    from router.gateway import safe_url

    assert safe_url("https://user:sk-secret@gpu.example:8443/v1?key=sk-q") == "https://gpu.example:8443/v1"
    assert safe_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
