"""What a team key's limits say about a request, in the shapes the gateway acts on (pure)."""

from __future__ import annotations

import math
import time
from collections.abc import Collection

from router.dispatch import DispatchFailed
from router.policy.identity import Identity, Limits
from router.policy.schema import Policy
from router.state.accounting import HELD_RETRY, Admission, period_reset


def local_backends(policy: Policy) -> list[str]:
    """The team's own box: what `local_share` counts and what a spent cloud budget leaves."""
    return [name for name, backend in policy.backends.items() if backend.kind == "llamacpp"]


def output_bound(policy: Policy, max_tokens: int) -> int:
    """The most output tokens a request may get: its max_tokens, cut to the largest
    `max_output_tokens` of the policy's backends when every one of them has a cap."""
    caps = [backend.output_cap for backend in policy.backends.values()]
    if caps and all(caps):
        return min(max_tokens, max(cap for cap in caps if cap))
    return max_tokens


def limits_problem(limits: Limits, backends: Collection[str]) -> str | None:
    """Why these limits cannot be a key's (for `keys add` and POST /admin/keys); None if they can."""
    for name in ("rpm", "tpm", "cloud_tokens"):
        value = getattr(limits, name)
        if value is not None and value < 1:
            return f"{name} must be at least 1, not {value}"
    if limits.local_share is not None and limits.local_share < 0:
        return f"local_share must be 0 (no local box) or more, not {limits.local_share}"
    if limits.wait_seconds is not None and not 0 < limits.wait_seconds <= 3600:
        return f"wait_seconds must be between 0 and 3600, not {limits.wait_seconds}"
    unknown = [b for b in limits.backends or () if b not in backends]
    if unknown:
        return f"backends: {', '.join(unknown)} not in the policy (its backends: {', '.join(sorted(backends))})"
    return None


def refusal(identity: Identity, admission: Admission, now: float) -> DispatchFailed:
    """429 rate_limit_error with the headers Claude Code reads to wait the right time: retry-after
    in seconds, and the Anthropic API's `anthropic-ratelimit-*-reset` as the RFC 3339 time."""
    reset = max(1, math.ceil(admission.reset_seconds))
    at = rfc3339(now + reset)
    limit = "requests per minute" if admission.refused == "requests" else "tokens per minute"
    headers = {"retry-after": str(reset)}
    if admission.refused == "requests":
        headers |= {
            "anthropic-ratelimit-requests-limit": str(admission.limit),
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": at,
        }
    else:
        headers |= {
            "anthropic-ratelimit-tokens-limit": str(admission.tokens_limit),
            "anthropic-ratelimit-tokens-remaining": "0",
            "anthropic-ratelimit-tokens-reset": at,
        }
    message = f"key {identity.key} is over its limit of {admission.limit or admission.tokens_limit} {limit}"
    return DispatchFailed(429, f"{message}: try again in {reset}s", "rate_limit_error", "(limits)", [], headers=headers)


def rfc3339(when: float) -> str:
    """A Unix time as the Anthropic API writes its reset times: UTC, whole seconds (2026-12-04T08:00:30Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(when)))


def within_budget(identity: Identity, admission: Admission) -> Identity:
    """A key whose cloud budget is spent (or held by its requests in flight) may still use the
    local box, and nothing else."""
    if not admission.budget_spent:
        return identity
    return Identity(identity.key, identity.team, identity.limits, budget_spent=True, budget_held=admission.budget_held)


def budget_refusal(identity: Identity, failure: DispatchFailed, now: float) -> DispatchFailed:
    """Nothing local could take it and the cloud budget is spent: 429 until the period ends; or
    held by the key's requests in flight: 429 for a few seconds, until their answers give back
    what they did not use."""
    if identity.budget_held:
        failure.headers["retry-after"] = str(HELD_RETRY)
        failure.message = (
            f"key {identity.key}'s cloud budget is held by its requests in flight (what each may use is "
            f"reserved until it ends) and nothing local can take the request; retry in {HELD_RETRY}s"
        )
        return failure
    reset = max(1, math.ceil(period_reset(now, identity.limits.budget_per or "day")))
    failure.headers["retry-after"] = str(reset)
    return failure
