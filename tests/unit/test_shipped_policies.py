"""The shipped policies load, and route Claude Code's kinds of request where their comments say."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.policy.engine import Engine
from router.policy.features import Features
from router.policy.loader import load_policy
from router.policy.snapshot import BackendSnapshot

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def engine(name: str) -> Engine:
    return Engine(load_policy(POLICIES / name, {}))


def feats(**kw: object) -> Features:
    return Features(**{"tokens": 20_000, "model": "claude-opus-4-8", "tool_count": 24, "thinking": True, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(p.name for p in POLICIES.glob("*.yaml")))
def test_every_shipped_policy_loads(name: str) -> None:
    assert load_policy(POLICIES / name, {}).rules


@pytest.mark.parametrize(
    ("kw", "state", "rule", "first"),
    [
        ({}, {}, "default", "gpu"),
        ({"tokens": 150_000}, {}, "long-prompts", "cloud"),
        ({"tokens": 70_000}, {}, "long-thinking", "cloud"),
        ({"tokens": 70_000, "thinking": False}, {}, "default", "gpu"),
        ({"tool_count": 90}, {}, "many-tools", "cloud"),
        ({"images": True}, {}, "default", "cloud"),  # gpu has no vision: skipped
        ({}, {"gpu": BackendSnapshot(slots=2, in_flight=2)}, "default", "cloud"),
        ({}, {"gpu": BackendSnapshot(healthy=False, detail="connection refused")}, "default", "cloud"),
    ],
)
def test_gpu_box_with_cloud_fallback(kw: dict, state: dict, rule: str, first: str) -> None:
    decision = engine("gpu-box-with-cloud-fallback.yaml").decide(feats(**kw), state)
    assert (decision.rule, decision.candidates[0]) == (rule, first)


def test_two_local_models() -> None:
    e = engine("two-local-models.yaml")
    background = e.decide(feats(model="claude-haiku-4-5-20251001", tool_count=0, thinking=False), {})
    assert (background.rule, background.candidates) == ("background", ("small", "big", "cloud"))
    assert background.transform is not None and background.transform.max_tokens == 4096
    assert e.decide(feats(), {}).candidates == ("big", "cloud")
    assert e.decide(feats(images=True), {}).candidates == ("cloud",)
    busy = {"big": BackendSnapshot(slots=1, in_flight=1)}
    assert e.decide(feats(), busy).candidates == ("cloud",)


def test_privacy_local_only_never_leaves_and_is_529_when_busy() -> None:
    e = engine("privacy-local-only.yaml")
    assert e.decide(feats(images=True, tokens=500_000), {}).candidates == ("gpu-a", "gpu-b")
    busy = {"gpu-a": BackendSnapshot(slots=1, in_flight=1), "gpu-b": BackendSnapshot(healthy=False, detail="down")}
    decision = e.decide(feats(), busy)
    assert decision.candidates == () and decision.skipped == {"gpu-a": "busy 1/1", "gpu-b": "unhealthy: down"}


def test_default_policy_falls_back_when_local_is_busy() -> None:
    e = engine("default.yaml")
    assert e.decide(feats(), {"local": BackendSnapshot(slots=1, foreign=1)}).candidates == ("fallback",)


def test_local_pool_prefers_the_server_holding_the_prompt_and_spills_to_the_cloud() -> None:
    from router.state.shared import LocalShared

    e = engine("local-pool.yaml")
    shared = LocalShared(clock=iter(range(100)).__next__)
    hashes = ("p0", "p1", "p2")
    shared.remember(hashes, "llama_b", 1, 3000, 3 * 2048)
    idle = {"llama_a": BackendSnapshot(slots=2), "llama_b": BackendSnapshot(slots=2)}
    decision = e.decide(feats(), idle, shared.local_view(hashes))
    assert decision.candidates == ("llama_b", "llama_a", "cloud") and decision.slots["llama_b"].slot == 1
    full = {"llama_a": BackendSnapshot(slots=2, in_flight=2), "llama_b": BackendSnapshot(slots=2, in_flight=2)}
    assert e.decide(feats(), full, shared.local_view(hashes)).candidates == ("cloud",)
