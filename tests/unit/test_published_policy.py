"""What the CLI reads of the policy the gateways published: only what a gateway would write."""

from __future__ import annotations

import msgspec
import pytest

from router.policy.loader import load_policy
from router.state.published_policy import decode, summary


def test_a_policy_round_trips_without_its_secrets(tmp_path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "backends:\n  gpu: {kind: llamacpp, url: 'http://box:8080'}\n"
        "  cloud: {kind: anthropic, url: 'https://api.anthropic.com', api_key: sk-ant-secret}\n"
        "rules: [{name: d, to: [gpu, cloud]}]\nprices: {'claude-*': {input: 3, output: 15}}\n"
    )
    raw = summary(load_policy(path))
    assert b"sk-ant-secret" not in raw and b"box:8080" not in raw
    published = decode(raw)
    assert published is not None and published.local == ["gpu"] and published.prices["claude-*"].output == 15


@pytest.mark.parametrize(
    "hostile",
    [
        {"backends": {"a": "llamacpp"}, "at": 1e300},
        {"backends": {"a": "llamacpp"}, "at": -1e20},
        {"backends": {"a": "gpu"}},
        {"backends": {"a": "anthropic"}, "prices": {"*": {"input": -3}}},
        {"backends": {"a": "anthropic"}, "prices": {"*": {"output": 1e308}}},
        {"backends": []},
    ],
)
def test_anything_else_is_nothing_published(hostile: dict) -> None:
    assert decode(msgspec.json.encode(hostile)) is None
    assert decode("not json") is None and decode(None) is None
