"""What the gateways on a Redis say about the policy they run, for the commands that work on the
team's Redis from elsewhere (`ccgate keys add --backends`, `ccgate usage`'s cost column): the
backend names and kinds, and the prices. Never the policy file: it may hold keys written in it.
"""

from __future__ import annotations

import time

import msgspec

from router.policy.schema import Policy, Price

KEY = "policy"  # under the policy's state.key_prefix


class PublishedPolicy(msgspec.Struct, frozen=True):
    backends: dict[str, str]  # name → kind
    prices: dict[str, Price] = msgspec.field(default_factory=dict)
    at: float = 0.0  # when a gateway put it in force (start-up or reload)

    @property
    def local(self) -> list[str]:
        return [name for name, kind in self.backends.items() if kind == "llamacpp"]


def summary(policy: Policy) -> bytes:
    backends = {name: config.kind for name, config in policy.backends.items()}
    return msgspec.json.encode(PublishedPolicy(backends, dict(policy.prices), time.time()))


def decode(raw: bytes | str | None) -> PublishedPolicy | None:
    """None for nothing published, or something no gateway of this version wrote."""
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw, type=PublishedPolicy)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
