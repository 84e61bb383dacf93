"""What the gateways on a Redis say about the policy they run, for the commands that work on the
team's Redis from elsewhere (`ccgate keys add --backends`, `ccgate usage`'s cost column): the
backend names and kinds, and the prices. Never the policy file: it may hold keys written in it.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

import msgspec

from router.policy.schema import Policy, Price

KEY = "policy"
MAX_TIME = 4_102_444_800.0  # 2100-01-01  # under the policy's state.key_prefix


class PublishedPolicy(msgspec.Struct, frozen=True):
    backends: dict[str, Literal["llamacpp", "openai", "anthropic"]]  # name → kind
    prices: dict[str, Price] = msgspec.field(default_factory=dict)
    at: Annotated[float, msgspec.Meta(ge=0, le=MAX_TIME)] = 0.0  # when a gateway put it in force

    @property
    def local(self) -> list[str]:
        return [name for name, kind in self.backends.items() if kind == "llamacpp"]


def summary(policy: Policy) -> bytes:
    backends = {name: config.kind for name, config in policy.backends.items()}
    return msgspec.json.encode(PublishedPolicy(backends, dict(policy.prices), time.time()))


def decode(raw: bytes | str | None) -> PublishedPolicy | None:
    """None for nothing published, or something no gateway of this version wrote (anyone who can
    write to the team's Redis can write there: what is read is checked, a price must be a price)."""
    if not raw:
        return None
    try:
        published = msgspec.json.decode(raw, type=PublishedPolicy)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    for price in published.prices.values():
        figures = [price.input, price.output, price.cached, price.cache_write, price.cache_write_1h]
        if not all(f is None or 0 <= f < 1e6 for f in figures):
            return None
    return published
