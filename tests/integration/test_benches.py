"""Every benchmark in bench/ runs and prints its table: a short run of each, as a smoke check
(bench/soak.py has its own, test_soak.py; bench/agent_prompts.py, which drives each agent's CLI
for minutes, is left out).

Figures are never asserted here (a busy machine is slower, not wrong); that each run ends, and
that its table has the rows it promises, is: a benchmark that no longer runs measures nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench(script: str, *args: str, redis_url: str | None = None) -> str:
    env = {**os.environ, "CCGATE_LOG_LEVEL": "warning"}
    if redis_url:
        env["REDIS_URL"] = redis_url
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_overhead_with_every_feature_on_and_two_workers(redis_url: str) -> None:
    out = bench(
        "overhead.py", "--requests", "20", "--seconds", "0.5", "--concurrency", "4,8", "--full",
        "--workers", "1,2", redis_url=redis_url,
    )  # fmt: skip
    assert "full pipeline" in out
    for row in ("direct", "ccgate/uvicorn 1 workers", "ccgate/uvicorn 2 workers"):
        assert row in out
    assert "Redis round trips per request" in out
    assert "OTLP exports received by the live receiver" in out
    assert "NOT ANSWERED" not in out


def test_relay_prompt_size_and_memory() -> None:
    relay = bench("relay.py", "--tokens", "300", "--streams", "1,4")
    assert relay.count("ccgate") == 2 and "x 200 tok/s" in relay
    sizes = bench("prompt_size.py", "--requests", "5", "--sizes", "20000,40000")
    assert "40000" in sizes and "prefix hashes" in sizes
    memory = bench("memory.py", "--requests", "500", "--concurrency", "8")
    assert memory.strip().splitlines()[-1].split()[0] == "500"


def test_client_and_redis_micro_benchmarks(redis_url: str) -> None:
    client = bench("upstream_client.py", "--requests", "50")
    assert "aiohttp" in client and "ccgate" in client and "httpx" in client
    view = bench("redis_view.py", "--requests", "50", redis_url=redis_url)
    assert "RedisShared.view" in view


def test_the_feature_benchmarks() -> None:
    assert "call as text" in bench("tool_guard.py", "--repeat", "1")
    assert "false positives" in bench("runaway.py", "--limit-mb", "2")
    assert "tool_descriptions" in bench("transform_savings.py")
    said = bench("prefix_affinity.py", "--turns", "2", "--scenarios", "2")
    assert "affinity vs round_robin" in said and "files vs affinity" in said
    assert "(save+restore)/process" in bench("slot_files.py", "--sizes", "256", "--models", "text")


def test_profile(tmp_path: Path) -> None:
    """py-spy comes with the test tools (pyproject): the profile runs, it is not skipped."""
    out = bench("profile.py", "--seconds", "2", "--out", str(tmp_path))
    assert "samples of the gateway process" in out
    assert list(tmp_path.glob("*.folded"))
