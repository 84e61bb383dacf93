"""The routing decision: pure. Request + policy + a snapshot of backend health → Decision."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from router.policy.schema import Policy


@dataclass(frozen=True, slots=True)
class BackendStatus:
    healthy: bool = True
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    rule: str
    candidates: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)  # backend → why it was passed over


def decide(policy: Policy, health: Mapping[str, BackendStatus]) -> Decision:
    """First rule wins (the [policy] engine adds conditions); unhealthy targets are skipped.

    When every target of the rule looks down, all are tried in order anyway: a health snapshot
    can be a second old, and trying costs one refused connection, while refusing costs a request.
    """
    rule = policy.rules[0]
    candidates: list[str] = []
    skipped: dict[str, str] = {}
    for name in rule.to:
        status = health.get(name, BackendStatus())
        if status.healthy:
            candidates.append(name)
        else:
            skipped[name] = f"unhealthy: {status.detail}" if status.detail else "unhealthy"
    if not candidates:
        return Decision(rule.name, tuple(rule.to), skipped)
    return Decision(rule.name, tuple(candidates), skipped)
