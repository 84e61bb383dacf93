"""`ccgate explain` and `POST /admin/explain` say what serving then does."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from tests.harness.procs import Process, free_port
from tests.integration.test_passthrough import ask


def test_admin_explain_matches_serving(start_ccgate, tool_llama: Process, text_llama: Process) -> None:
    gw = start_ccgate(
        {
            "local": {"kind": "llamacpp", "url": f"http://127.0.0.1:{free_port()}"},
            "fallback": {"kind": "anthropic", "url": text_llama.url},
        }
    )
    explained = httpx.post(gw.url + "/admin/explain", json=ask()).json()
    served = httpx.post(gw.url + "/v1/messages", json=ask())
    assert explained["backend"] == served.headers["x-ccgate-backend"] == "fallback"
    assert explained["rule"] == served.headers["x-ccgate-route"]
    [local] = [t for t in explained["targets"] if t["backend"] == "local"]
    down = r"unhealthy: down since \d\d:\d\d:\d\d: connection refused"
    assert local["eligible"] is False and re.fullmatch(down, local["reason"])
    assert re.fullmatch("local: " + down, served.headers["x-ccgate-fallback-reason"])


def test_cli_explain_live_and_idle(tmp_path: Path, text_llama: Process) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "backends": {
                    "local": {"kind": "llamacpp", "url": f"http://127.0.0.1:{free_port()}"},
                    "fallback": {"kind": "anthropic", "url": text_llama.url},
                },
                "rules": [
                    {"name": "haiku", "when": {"model": "*haiku*"}, "to": ["fallback"]},
                    {"name": "main", "to": ["local", "fallback"]},
                ],
            }
        )
    )
    request = tmp_path / "r.json"
    request.write_text(json.dumps(ask()))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "router.cli", "explain", str(request), "--config", str(policy), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    idle = run("--json")
    assert idle.returncode == 0, idle.stderr
    assert json.loads(idle.stdout)["backend"] == "local"
    live = run("--state", "live")
    assert live.returncode == 0, live.stderr
    assert "goes to: fallback" in live.stdout
    assert re.search(r"unhealthy: down since \S+: connection refused", live.stdout), live.stdout
    request.write_text(json.dumps({**ask(), "model": "claude-haiku-4-5"}))
    assert json.loads(run("--json").stdout)["rule"] == "haiku"


def test_explain_reads_each_dialect_and_says_what_it_dropped(tmp_path: Path) -> None:
    """A Codex CLI-shaped capture: its hosted tools no backend runs are dropped, and said so."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "backends:\n  local: {kind: llamacpp, url: 'http://127.0.0.1:9'}\n"
        "rules:\n  - {name: codex, when: {client: codex}, to: [local]}\n  - {name: d, to: [local]}\n"
    )
    tools = [{"type": "function", "name": "exec_command", "parameters": {"type": "object"}}, {"type": "web_search"}]
    capture = {
        "path": "/v1/responses",
        "headers": {"User-Agent": "codex_exec/0.169.0 (Debian 12.0.0; x86_64) xterm"},
        "body": {"model": "local-model", "input": "list files", "tools": tools, "store": False, "stream": True},
    }
    request = tmp_path / "codex.json"
    request.write_text(json.dumps(capture))
    cmd = [sys.executable, "-m", "router.cli", "explain", str(request), "--config", str(policy)]
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    explained = json.loads(done.stdout)
    assert explained["rule"] == "codex"
    assert explained["features"]["dialect"] == "responses" and explained["features"]["dropped_tools"] == ["web_search"]
    assert explained["features"]["tools"] == 1
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    assert "dialect: responses (dropped hosted tools no backend here runs: web_search)" in text
    chat = tmp_path / "chat.json"  # no path: told from its shape
    chat.write_text(
        json.dumps({"model": "m", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]})
    )
    done = subprocess.run([*cmd[:4], str(chat), *cmd[5:], "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(done.stdout)["features"]["dialect"] == "chat", done.stderr
