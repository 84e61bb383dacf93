from __future__ import annotations

from router.policy.engine import BackendStatus, decide
from router.policy.loader import parse_policy

POLICY = parse_policy(
    """
backends:
  local: {kind: llamacpp, url: "http://a"}
  fallback: {kind: anthropic, url: "http://b"}
rules:
  - {name: default, to: [local, fallback]}
""",
    "p",
    {},
)


def test_healthy_order_is_the_rules_order() -> None:
    decision = decide(POLICY, {})
    assert (decision.rule, decision.candidates, decision.skipped) == ("default", ("local", "fallback"), {})


def test_unhealthy_backend_is_skipped_with_its_reason() -> None:
    decision = decide(POLICY, {"local": BackendStatus(False, "connection refused")})
    assert decision.candidates == ("fallback",)
    assert decision.skipped == {"local": "unhealthy: connection refused"}


def test_all_unhealthy_still_tries_in_order() -> None:
    down = BackendStatus(False, "x")
    decision = decide(POLICY, {"local": down, "fallback": down})
    assert decision.candidates == ("local", "fallback")
