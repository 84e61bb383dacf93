"""The real Claude Code CLI (npm @anthropic-ai/claude-code, native binary, offline) through ccgate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.harness.procs import Process, claude_binary


def run_claude(
    gateway: Process, tmp_path: Path, *args: str, prompt: str = "read a.txt", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """One `claude -p` in tmp_path's project, with its own HOME there (so `--continue` finds the
    session a previous run in the same tmp_path left); `env` adds to or replaces its variables."""
    project = tmp_path / "project"
    home = tmp_path / "home"
    project.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    (project / "a.txt").write_text("hi\n")
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gateway.url,
        "ANTHROPIC_AUTH_TOKEN": "test",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        **(env or {}),
    }
    # As root, Claude Code refuses --dangerously-skip-permissions; --allowedTools works.
    command = [claude_binary(), "-p", prompt, "--allowedTools", "Read", *args]
    return subprocess.run(
        command, cwd=project, env=environment, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )


def blocks(messages: list[dict], role: str, kind: str) -> list[dict]:
    """Content blocks of one kind in the CLI's stream-json messages of one type."""
    return [
        block
        for m in messages
        if m["type"] == role
        for block in m["message"]["content"]
        if isinstance(block, dict) and block.get("type") == kind
    ]


@pytest.fixture(params=["llamacpp", "openai"])
def any_dialect_gateway(request: pytest.FixtureRequest, gateway: Process, tool_llama: Process, start_ccgate) -> Process:
    """Passthrough to llama-server's /v1/messages, and the translator to its /v1/chat/completions."""
    if request.param == "llamacpp":
        return gateway
    return start_ccgate({"local": {"kind": "openai", "url": tool_llama.url + "/v1"}})


@pytest.mark.cli
def test_claude_code_reads_a_file_through_ccgate(any_dialect_gateway: Process, tmp_path: Path) -> None:
    done = run_claude(any_dialect_gateway, tmp_path, "--output-format", "stream-json", "--verbose")
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    messages = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    calls = blocks(messages, "assistant", "tool_use")
    assert [(c["name"], c["input"]) for c in calls] == [("Read", {"file_path": "a.txt"})]
    results = blocks(messages, "user", "tool_result")
    assert results and results[0]["tool_use_id"] == calls[0]["id"]
    assert "hi" in json.dumps(results[0]["content"])  # the CLI really read the file

    [result] = [m for m in messages if m["type"] == "result"]
    assert result["subtype"] == "success" and not result["is_error"]
    assert result["num_turns"] == 2
    assert result["result"] == "The file a.txt says hi."


@pytest.mark.cli
def test_claude_code_json_output(gateway: Process, tmp_path: Path) -> None:
    done = run_claude(gateway, tmp_path, "--output-format", "json")
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    result = json.loads(done.stdout)
    assert (result["subtype"], result["num_turns"], result["result"]) == ("success", 2, "The file a.txt says hi.")


@pytest.mark.cli
def test_claude_code_keeps_working_when_local_is_down(start_ccgate, text_llama: Process, tmp_path: Path) -> None:
    from tests.harness.procs import free_port

    gw = start_ccgate(
        {
            "local": {"kind": "llamacpp", "url": f"http://127.0.0.1:{free_port()}"},
            "fallback": {"kind": "anthropic", "url": text_llama.url},
        }
    )
    done = run_claude(gw, tmp_path, "--output-format", "json")
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    result = json.loads(done.stdout)
    assert (result["subtype"], result["result"]) == ("success", "Hello from the scripted model.")


@pytest.mark.cli
def test_claude_code_runs_a_call_the_model_wrote_as_text(start_ccgate, start_llama_server, tmp_path: Path) -> None:
    """llama-server with a template that ignores tools: the call arrives as text, the guard turns
    it into a tool_use, and Claude Code really executes it. (The scripted model then calls again,
    since this template never shows it the result's marker: two turns are enough.)"""
    chatml = start_llama_server("tool", "-np", "1", "--chat-template", "chatml")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": chatml.url}})
    done = run_claude(gw, tmp_path, "--output-format", "stream-json", "--verbose", "--max-turns", "2")
    messages = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    calls = blocks(messages, "assistant", "tool_use")
    assert calls, done.stderr + done.stdout[-2000:]
    assert (calls[0]["name"], calls[0]["input"]) == ("Read", {"file_path": "a.txt"})
    results = blocks(messages, "user", "tool_result")
    assert results and results[0]["tool_use_id"] == calls[0]["id"] and "hi" in json.dumps(results[0]["content"])
    assert not any("<tool_call>" in b["text"] for b in blocks(messages, "assistant", "text"))
