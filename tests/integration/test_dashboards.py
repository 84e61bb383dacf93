"""The dashboards: generated JSON is what is committed, and every panel query returns data from a
real Prometheus scraping ccgate and a real llama-server during a short scripted load."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from dashboards.generate import HERE, render
from tests.harness.procs import Process, free_port, start_gateway
from tests.harness.wait import wait_until
from tests.integration.test_metrics import metrics_headers
from tests.integration.test_passthrough import ask


def test_committed_dashboards_match_the_generator() -> None:
    for name, text in render().items():
        assert (HERE / name).read_text() == text, f"dashboards/{name} is stale: run python dashboards/generate.py"


def queries() -> list[tuple[str, str, str]]:
    out = []
    for name in ("gateway.json", "local-models.json"):
        for panel in json.loads((HERE / name).read_text())["panels"]:
            for target in panel["targets"]:
                out.append((name, panel["title"], target["expr"]))
    return out


def promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "30s").replace("$backend", ".*").replace("$instance", ".*")


@pytest.fixture
def prometheus(tmp_path: Path, logdir: Path, owned):  # type: ignore[no-untyped-def]
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed: ./scripts/test installs Debian's package")

    def start(targets: dict[str, str], token: str | None = None) -> str:
        """Prometheus scraping `targets` (job → host:port); `token`: ccgate's metrics token."""
        port = free_port()
        (tmp_path / "token").write_text(token or "")
        auth = {"authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "token")}} if token else {}
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}], **(auth if job == "ccgate" else {})}
                for job, target in targets.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        args = [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        proc = owned(Process(f"prometheus-{port}", args, port, logdir / f"prometheus-{port}.log"))
        return proc.start("/-/ready").url

    return start


def test_every_panel_query_returns_data(
    prometheus, owned, tmp_path: Path, logdir: Path, tool_llama: Process, text_llama: Process, redis_url: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "backends": {
                    "dead": {"kind": "llamacpp", "url": dead},
                    "local": {"kind": "llamacpp", "url": tool_llama.url},
                    "fallback": {"kind": "anthropic", "url": text_llama.url},
                },
                "rules": [
                    {"name": "doomed", "when": {"model": "*doomed*"}, "to": ["dead"]},
                    {"name": "default", "to": ["dead", "local", "fallback"]},
                ],
                "teams": {"core": {}},  # the team panels: one team's usage, local and cloud
                "state": {"key_prefix": f"test-{secrets.token_hex(4)}:"},
            }
        )
    )
    token = secrets.token_hex(16)
    env = {"CCGATE_RELOAD_INTERVAL": "0", "CCGATE_AUTH": "keys", "REDIS_URL": redis_url, "CCGATE_METRICS_TOKEN": token}
    gw = owned(start_gateway(policy, logdir, env))
    made = subprocess.run(
        [sys.executable, "-m", "router.cli", "keys", "add", "dev", "--team", "core", "--config", str(policy)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    key = {"x-api-key": made.stdout.splitlines()[-1]}
    url = prometheus({"ccgate": f"127.0.0.1:{gw.port}", "llama": f"127.0.0.1:{tool_llama.port}"}, token)
    gw.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]  # one policy reload
    scrapes = 0
    for i in range(8):  # a short scripted load spread over several scrapes
        stream = i % 2 == 0
        r = httpx.post(gw.url + "/v1/messages", json={**ask(), "stream": stream}, headers=key, timeout=30)
        assert r.status_code == 200
        doomed = httpx.post(gw.url + "/v1/messages", json={**ask(), "model": "doomed"}, headers=key, timeout=30)
        assert doomed.status_code == 529
        scrapes = scraped_since(url, scrapes)
    check = subprocess.run(
        ["promtool", "check", "metrics"],
        input=httpx.get(gw.url + "/metrics", headers=metrics_headers(gw)).text,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    def empty_panels() -> list[str]:
        empty = []
        for board, title, expr in queries():
            answer = httpx.get(url + "/api/v1/query", params={"query": promql(expr)}, timeout=10).json()
            assert answer["status"] == "success", (board, title, answer)
            if not answer["data"]["result"]:
                empty.append(f"{board} / {title}: {expr}")
        return empty

    # rates need two scrapes of a series after it changed: wait for them, not for a duration
    wait_until(lambda: not empty_panels(), "every panel has data", every=1.0)


def scraped_since(url: str, count: int) -> int:
    """Wait until Prometheus scraped ccgate once more than `count` times; the new count."""
    return wait_until(lambda: (n := scrape_count(url)) > count and n, "prometheus scraped ccgate again")


def scrape_count(url: str) -> int:
    """How many times Prometheus has scraped ccgate so far (its own scrape_samples_scraped series)."""
    query = 'count_over_time(scrape_samples_scraped{job="ccgate"}[10m])'
    result = httpx.get(url + "/api/v1/query", params={"query": query}, timeout=10).json()["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0
