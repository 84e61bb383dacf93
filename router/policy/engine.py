"""The routing decision: pure. Request features + the policy + a state snapshot → Decision.

Rules are tried top-down and the first whose `when:` holds wins. Its targets are then filtered
in order: a target is skipped, with the reason recorded, when it is unhealthy, its breaker is
open, the prompt does not fit its context window, it lacks a capability the request needs, or
it is busy. What is left, in order, are the candidates: the first gets the request, the rest are
its fallbacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from router.policy.conditions import Condition, compile_when
from router.policy.features import Features
from router.policy.model_families import family_of, supports_tools
from router.policy.schema import BackendConfig, Policy, Rule
from router.policy.snapshot import BackendSnapshot
from router.policy.transforms import Transform


@dataclass(frozen=True, slots=True)
class Decision:
    rule: str
    candidates: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)  # backend → why it was passed over
    transform: Transform | None = None
    skip_kinds: dict[str, str] = field(default_factory=dict)  # backend → busy, unhealthy, ... (a metric label)


def busy_limit(config: BackendConfig, state: BackendSnapshot) -> int | None:
    return config.max_concurrent or state.slots


def is_busy(config: BackendConfig, state: BackendSnapshot) -> bool:
    limit = busy_limit(config, state)
    return limit is not None and state.queue_depth >= limit


class Engine:
    """A policy with its conditions compiled; `decide` is a pure function of its arguments."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        names = set(policy.backends)

        def busy(name: str, state: BackendSnapshot) -> bool:
            return is_busy(policy.backends[name], state)

        self._rules: list[tuple[Rule, Condition]] = [
            (rule, compile_when(rule.when, f"$.rules[{i}].when", names, busy)) for i, rule in enumerate(policy.rules)
        ]

    def decide(self, features: Features, state: Mapping[str, BackendSnapshot]) -> Decision:
        for rule, condition in self._rules:
            if condition(features, state):
                return self._filter(rule, features, state)
        return Decision("(no rule matched)", (), {})

    def _filter(self, rule: Rule, features: Features, state: Mapping[str, BackendSnapshot]) -> Decision:
        candidates: list[str] = []
        skipped: dict[str, str] = {}
        kinds: dict[str, str] = {}
        for name in rule.to:
            why = self._skip_reason(self.policy.backends[name], state.get(name, BackendSnapshot()), features)
            if why:
                kinds[name], skipped[name] = why
            else:
                candidates.append(name)
        return Decision(rule.name, tuple(candidates), skipped, rule.transform, kinds)

    @staticmethod
    def _skip_reason(config: BackendConfig, state: BackendSnapshot, features: Features) -> tuple[str, str] | None:
        """(kind, reason) when the target cannot take the request."""
        if not state.healthy:
            return "unhealthy", f"unhealthy: {state.detail}" if state.detail else "unhealthy"
        if state.breaker == "open":
            return "breaker", "breaker open"
        window = config.context_window or state.n_ctx
        if window and features.tokens > window:
            return "context", f"context {_k(features.tokens)} > window {_k(window)}"
        wants = config.capabilities
        if features.tool_count and not _takes_tools(wants.tools, state):
            family = family_of(state.model)
            return "capability", f"no tool support ({family.name})" if family else "no tool support"
        if features.images and not wants.images:
            return "capability", "no image support"
        if features.thinking and not wants.thinking:
            return "capability", "no thinking support"
        if is_busy(config, state):
            return "busy", f"busy {state.queue_depth}/{busy_limit(config, state)}"
        return None


def _takes_tools(setting: bool | str, state: BackendSnapshot) -> bool:
    if setting == "auto":
        return supports_tools(state.model) is not False
    return bool(setting)


def _k(tokens: int) -> str:
    return f"{tokens / 1000:.0f}k" if tokens >= 1000 else str(tokens)
