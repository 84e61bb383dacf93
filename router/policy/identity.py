"""Who a request is from, and what that lets it use (pure).

A team key resolves to an Identity: the key's name (never its secret), its team, and its
limits, the key's own over its team's (declared in the policy file's `teams:`, or set when the
key was made). The engine reads the identity like any other request feature: rules may match a
team, targets a key may not use are skipped with the reason, a key over its share of the local
box is treated as if the box were busy for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

WhenBusy = Literal["fallback", "wait", "reject"]
BudgetPeriod = Literal["day", "month"]


class Limits(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """Limits of a team or a key; unset fields are no limit (or, on a key, its team's)."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute: input + cached + output, as the backends reported them
    cloud_tokens: int | None = None  # tokens the cloud may spend for it per `budget_per`
    budget_per: BudgetPeriod | None = None  # day (default) or month
    local_share: int | None = None  # requests it may have at once on local (llamacpp) backends
    backends: list[str] | None = None  # the backends it may use; None: all
    when_busy: WhenBusy | None = None  # the local box is busy: fallback (default), wait, reject
    wait_seconds: float | None = None  # with when_busy: wait, how long (default 30)

    def over(self, base: Limits) -> Limits:
        """These limits, with what they leave unset taken from `base` (a key's over its team's)."""
        mine = msgspec.structs.asdict(self)
        theirs = msgspec.structs.asdict(base)
        return Limits(**{k: mine[k] if mine[k] is not None else theirs[k] for k in mine})


NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Identity:
    key: str  # the key's name, as `ccgate keys add NAME` gave it
    team: str
    limits: Limits = NO_LIMITS
    budget_spent: bool = False  # its cloud budget for this period is spent: only local backends
    budget_held: bool = False  # ... not spent, but held by its requests in flight for now

    @property
    def when_busy(self) -> WhenBusy:
        return self.limits.when_busy or "fallback"

    @property
    def wait_seconds(self) -> float:
        return self.limits.wait_seconds if self.limits.wait_seconds is not None else 30.0

    def may_use(self, backend: str) -> bool:
        return self.limits.backends is None or backend in self.limits.backends
