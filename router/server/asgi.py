"""An ASGI entry point for servers other than `ccgate serve`: `granian --factory router.server.asgi:create`.

Settings come from the environment (CCGATE_CONFIG, ...), exactly as for `ccgate serve`.
"""

from __future__ import annotations

from litestar import Litestar

from router.server.app import create_app


def create() -> Litestar:
    return create_app()
