"""Which credentials go upstream: a backend's own key, or the client's own token, never both."""

from __future__ import annotations

import pytest

from router.backends.anthropic_wire import credentials
from router.config import BackendConfig

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


def test_model_mapping() -> None:
    mapped = BackendConfig(kind="openai", url="http://a", model={"*haiku*": "qwen3-4b", "*": "qwen3-coder"})
    assert mapped.upstream_model("claude-haiku-4-5") == "qwen3-4b"
    assert mapped.upstream_model("claude-opus-4-8") == "qwen3-coder"
    assert mapped.model_names == ["qwen3-4b", "qwen3-coder"]
    assert BackendConfig(kind="openai", url="http://a").upstream_model("x") == "x"
    assert BackendConfig(kind="openai", url="http://a", model={"*sonnet*": "s"}).upstream_model("opus") == "opus"
