"""A team: ccgate replicas in keys mode on one real Redis, and the `ccgate keys` CLI beside them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field

import httpx
import pytest

from tests.harness.procs import Process
from tests.integration.test_passthrough import ask

ADMIN_TOKEN = "adm-" + secrets.token_urlsafe(24)


@dataclass
class Team:
    """Two replicas of one policy, keys in auth mode, and the CLI pointed at the same Redis."""

    replicas: list[Process]
    env: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)  # name → key, for the leak checks

    @property
    def policy(self) -> str:
        args = self.replicas[0].args
        return args[args.index("--config") + 1]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "router.cli", *args, "--config", self.policy]
        return subprocess.run(command, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60)

    def add_key(self, name: str, team: str, *limits: str) -> str:
        done = self.cli("keys", "add", name, "--team", team, *limits)
        assert done.returncode == 0, done.stderr
        key = done.stdout.splitlines()[-1]
        assert key.startswith("ccg-") and len(key) == 4 + 43, done.stdout  # 32 bytes, urlsafe base64
        self.keys[name] = key
        return key

    def post(self, key: str | None, body: dict | None = None, replica: int = 0, **headers: str) -> httpx.Response:
        sent = {"x-api-key": key} if key else {}
        return httpx.post(
            self.replicas[replica].url + "/v1/messages", json=body or ask(), headers={**sent, **headers}, timeout=120
        )


@pytest.fixture
def make_team(start_ccgate, redis_url: str):
    def make(
        backends: dict[str, dict], extra: dict | None = None, replicas: int = 2, env: dict[str, str] | None = None
    ) -> Team:
        env = {"REDIS_URL": redis_url, "CCGATE_AUTH": "keys", "CCGATE_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
        extra = {"state": {"key_prefix": f"test-{secrets.token_hex(4)}:"}, **(extra or {})}
        started = [start_ccgate(backends, env=env, extra=extra) for _ in range(replicas)]
        return Team(started, env)

    return make
