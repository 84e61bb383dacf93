"""A decision, explained: the same data for `ccgate explain`, `POST /admin/explain` and logs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.policy.engine import Engine
from router.policy.features import Features
from router.policy.snapshot import BackendSnapshot


def explain(
    engine: Engine,
    features: Features,
    state: Mapping[str, BackendSnapshot],
    dialect: str = "anthropic",
    dropped_tools: list[str] | None = None,
) -> dict[str, Any]:
    """`dialect`: the caller's (anthropic, chat, responses); `dropped_tools`: hosted tool types
    taken out on the way in, because no backend of a policy can run them."""
    decision = engine.decide(features, state)
    rule = next((r for r in engine.policy.rules if r.name == decision.rule), None)
    targets = rule.targets if rule else []
    return {
        "rule": decision.rule,
        "backend": decision.candidates[0] if decision.candidates else None,
        "candidates": list(decision.candidates),
        "targets": [
            {
                "backend": name,
                "eligible": name in decision.candidates,
                "reason": decision.skipped.get(name, ""),
                "state": _state(state.get(name, BackendSnapshot())),
            }
            for name in targets
        ],
        "features": {
            "tokens": features.tokens,
            "model": features.model,
            "tools": features.tool_count,
            "thinking": features.thinking,
            "images": features.images,
            "max_tokens": features.max_tokens,
            "client": features.client,
            "dialect": dialect,
            "dropped_tools": dropped_tools or [],
        },
    }


def render(explained: dict[str, Any]) -> str:
    """A table a person reads in five seconds."""
    f = explained["features"]
    lines = [
        f"request: model {f['model']}, ~{f['tokens']} tokens, {f['tools']} tools, "
        f"thinking {'on' if f['thinking'] else 'off'}, images {'yes' if f['images'] else 'no'}, client {f['client']}",
        f"dialect: {f['dialect']}"
        + (
            f" (dropped hosted tools no backend here runs: {', '.join(f['dropped_tools'])})"
            if f["dropped_tools"]
            else ""
        ),
        f"rule:    {explained['rule']}",
        f"goes to: {explained['backend'] or 'nobody (529 overloaded)'}",
        "",
        f"  {'#':<3}{'backend':<16}{'verdict':<12}{'queue':<8}{'why'}",
    ]
    order = 0
    for target in explained["targets"]:
        state = target["state"]
        queue = f"{state['queue_depth']}/{state['slots']}" if state["slots"] else str(state["queue_depth"])
        if target["eligible"]:
            order += 1
            verdict = "first" if order == 1 else "fallback"
        else:
            verdict = "skipped"
        number = str(order) if target["eligible"] else "-"
        lines.append(f"  {number:<3}{target['backend']:<16}{verdict:<12}{queue:<8}{target['reason']}")
    return "\n".join(lines)


def _state(s: BackendSnapshot) -> dict[str, Any]:
    return {
        "healthy": s.healthy,
        "detail": s.detail,
        "breaker": s.breaker,
        "queue_depth": s.queue_depth,
        "in_flight": s.in_flight,
        "slots": s.slots,
        "n_ctx": s.n_ctx,
    }
