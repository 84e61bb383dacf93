"""The routing decision: pure. Request features + the policy + a state snapshot → Decision.

Rules are tried top-down and the first whose `when:` holds wins. Its targets are then filtered
in order: a target is skipped, with the reason recorded, when it is unhealthy, its breaker is
open, the prompt does not fit its context window, it lacks a capability the request needs, or
it is busy. What is left, in order, are the candidates: the first gets the request, the rest are
its fallbacks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from router.config import BackendConfig
from router.policy.affinity import PrefixView, SlotChoice, SlotSaving, slot_choices
from router.policy.conditions import Condition, compile_when
from router.policy.features import Features
from router.policy.model_families import family_of, supports_tools
from router.policy.schema import Policy, Rule
from router.policy.snapshot import BackendSnapshot
from router.policy.transforms import Transform


@dataclass(frozen=True, slots=True)
class Decision:
    rule: str
    candidates: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)  # backend → why it was passed over
    transform: Transform | None = None
    skip_kinds: dict[str, str] = field(default_factory=dict)  # backend → busy, unhealthy, ... (a metric label)
    slots: dict[str, SlotChoice] = field(default_factory=dict)  # llama.cpp slot to pin, per candidate
    # The key's `when_busy: wait`: the local backend to wait for (its slots, or the key's share,
    # are taken); `reject`: the local box was busy and nothing after it is tried.
    wait_for: str | None = None
    rejected_busy: bool = False


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

    def decide(
        self,
        features: Features,
        state: Mapping[str, BackendSnapshot],
        prefix: PrefixView | None = None,
        sequence: int = 0,
    ) -> Decision:
        """`prefix`: what the prefix index knows of this prompt; `sequence`: a request counter
        for round-robin pools."""
        for rule, condition in self._rules:
            if condition(features, state):
                return self._filter(rule, features, state, prefix or PrefixView(), sequence)
        return Decision("(no rule matched)", (), {})

    def _filter(
        self,
        rule: Rule,
        features: Features,
        state: Mapping[str, BackendSnapshot],
        prefix: PrefixView,
        sequence: int,
    ) -> Decision:
        candidates: list[str] = []
        skipped: dict[str, str] = {}
        kinds: dict[str, str] = {}
        slots: dict[str, SlotChoice] = {}
        wait_for: str | None = None
        when_busy = features.identity.when_busy if features.identity else "fallback"
        for group in rule.groups:
            eligible: list[str] = []
            for name in group:
                why = self._skip_reason(name, self.policy.backends[name], state.get(name, BackendSnapshot()), features)
                if why:
                    kinds[name], skipped[name] = why
                    local = self.policy.backends[name].kind == "llamacpp"
                    if local and why[0] in ("busy", "share") and when_busy != "fallback":
                        if when_busy == "wait":
                            wait_for = wait_for or name
                        else:  # reject: the box being busy is the answer, not a reason to move on
                            return Decision(
                                rule.name, tuple(candidates), skipped, rule.transform, kinds, slots, rejected_busy=True
                            )
                else:
                    eligible.append(name)
            for name in eligible if rule.pick == "affinity" else ():
                config = self.policy.backends[name]
                snapshot = state.get(name, BackendSnapshot())
                if config.kind == "llamacpp" and not snapshot.pinning_useless:
                    saving = _saving(name, config, snapshot, self.policy.state.key_prefix)
                    slots[name] = slot_choices(prefix, name, snapshot.slots, saving)[0]
            if len(eligible) > 1:
                eligible = _pick(rule.pick, eligible, state, slots, sequence)
            candidates += eligible
        if wait_for is not None:  # nothing before the box may take it: wait for the box, not the cloud
            before = rule.targets[: rule.targets.index(wait_for)]
            if not any(name in candidates for name in before):
                candidates = []
        return Decision(rule.name, tuple(candidates), skipped, rule.transform, kinds, slots, wait_for)

    @staticmethod
    def _skip_reason(
        name: str, config: BackendConfig, state: BackendSnapshot, features: Features
    ) -> tuple[str, str] | None:
        """(kind, reason) when the target cannot take the request."""
        identity = features.identity
        if identity is not None and not identity.may_use(name):
            return "forbidden", f"not for key {identity.key}"
        if identity is not None and identity.budget_spent and config.kind != "llamacpp":
            if identity.budget_held:
                return "budget", f"key {identity.key}'s cloud budget is held by its requests in flight"
            return "budget", f"key {identity.key} has spent its cloud budget"
        if identity is not None and config.needs_client_credentials and not features.client_credentials:
            return "credentials", "no api_key, and the request brings no credentials but its team key"
        if not state.healthy:
            return "unhealthy", f"unhealthy: {state.detail}" if state.detail else "unhealthy"
        if state.breaker == "open":
            return "breaker", "breaker open"
        window = config.context_window or state.n_ctx
        if window and features.tokens > window and not features.counting:
            return "context", f"context {_k(features.tokens)} > window {_k(window)}"
        wants = config.capabilities
        if features.tool_count and not _takes_tools(wants.tools, state):
            family = family_of(state.model)
            return "capability", f"no tool support ({family.name})" if family else "no tool support"
        if features.images and not wants.images:
            return "capability", "no image support"
        if features.thinking and not wants.thinking:
            return "capability", "no thinking support"
        if is_busy(config, state) and not features.counting:
            return "busy", f"busy {state.queue_depth}/{busy_limit(config, state)}"
        share = identity.limits.local_share if identity is not None and not features.counting else None
        if share is not None and config.kind == "llamacpp" and features.local_in_flight >= share:
            return "share", f"key {identity.key} has {features.local_in_flight}/{share} of the local box"
        return None


def _pick(
    how: str, names: list[str], state: Mapping[str, BackendSnapshot], slots: Mapping[str, SlotChoice], sequence: int
) -> list[str]:
    """A pool's members in the order to try them."""
    if how == "round_robin":
        turn = sequence % len(names)
        return names[turn:] + names[:turn]

    def load(name: str) -> int:
        return state.get(name, BackendSnapshot()).queue_depth

    if how == "least_busy":
        return sorted(names, key=load)  # stable: ties keep the policy's order

    def affinity(name: str) -> tuple[bool, int, int]:
        choice = slots.get(name)
        return (choice.busy, -choice.score, load(name)) if choice else (False, 0, load(name))

    return sorted(names, key=affinity)


def _takes_tools(setting: bool | str, state: BackendSnapshot) -> bool:
    if setting == "auto":
        return supports_tools(state.model) is not False
    return bool(setting)


def _k(tokens: int) -> str:
    return f"{tokens / 1000:.0f}k" if tokens >= 1000 else str(tokens)


def _saving(name: str, config: BackendConfig, snapshot: BackendSnapshot, deployment: str) -> SlotSaving | None:
    """Slot files, where the server allows them and the policy does not turn them off."""
    budget = config.slot_files.budget(snapshot.slots)
    if not snapshot.slot_files or snapshot.slot_files_unused or not budget:
        return None
    tag = hashlib.sha256(f"{deployment}\0{name}\0{snapshot.model or ''}".encode()).hexdigest()[:10]
    return SlotSaving(budget, config.slot_files.min_tokens, tag)


def slot_files_state(config: BackendConfig | None, snapshot: BackendSnapshot) -> str | None:
    """Whether ccgate saves and restores this backend's slots, and if not why, for a person
    (the start-up line, /readyz); None for what is not llama-server."""
    if config is None or config.kind != "llamacpp":
        return None
    if config.slot_files.files == 0:
        return "off (the policy's slot_files.files is 0)"
    if snapshot.slot_files is None:
        return "unknown until llama-server answers (POST /slots)"
    if not snapshot.slot_files:
        return "off: llama-server was started without --slot-save-path"
    if snapshot.pinning_useless:
        return "off: llama-server clears its idle slots (started without -np), so nothing is pinned to them"
    if snapshot.slot_files_unused:
        return (
            "off: restored slots gave nothing back (a sliding-window model such as Gemma 3 or gpt-oss "
            "reuses a restored slot only with llama-server's --swa-full)"
        )
    budget = config.slot_files.budget(snapshot.slots)
    if not budget:
        return "off: llama-server reports no slots (/props total_slots)"
    return f"on: up to {budget} files, prefixes of {config.slot_files.min_tokens}+ tokens"
