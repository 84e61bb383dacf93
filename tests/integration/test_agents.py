"""The real OpenAI-dialect agents through ccgate, offline: Opencode (npm opencode-ai, Chat
Completions) and Codex CLI (npm @openai/codex, Responses). Each is configured at the gateway as
docs/agents.md says, and runs a one-line task in which a scripted model calls the agent's own
tool (Opencode's `read`, Codex's `exec_command`) and answers after the tool result."""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.harness.procs import Process, agent_binary
from tests.harness.scripted_model import QWEN_PROJECT
from tests.harness.wait import wait_until
from tests.integration.test_claude_cli import run_claude
from tests.integration.test_metrics import scrape, total

FILE_TEXT = "hi from the project\n"
FINAL = "The file a.txt says hi."
MODEL = "local-model"


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir(parents=True, exist_ok=True)
    (project / "a.txt").write_text(FILE_TEXT)
    return project


def _base_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TERM": "dumb"}


def run_opencode(gateway: Process, tmp_path: Path, api_key: str = "test") -> subprocess.CompletedProcess[str]:
    project = _project(tmp_path)
    config = tmp_path / "xdg-config"
    (config / "opencode").mkdir(parents=True, exist_ok=True)
    provider = {
        "npm": "@ai-sdk/openai-compatible",
        "name": "ccgate",
        "options": {"baseURL": gateway.url + "/v1", "apiKey": api_key},
        "models": {MODEL: {"name": MODEL}},
    }
    (config / "opencode" / "opencode.json").write_text(
        json.dumps({"provider": {"ccgate": provider}, "model": f"ccgate/{MODEL}"})
    )
    env = {
        **_base_env(tmp_path),
        "XDG_CONFIG_HOME": str(config),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "PWD": str(project),
    }
    command = [agent_binary("opencode"), "run", "-m", f"ccgate/{MODEL}", "--format", "json", "read a.txt"]
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )


def run_codex(gateway: Process, tmp_path: Path, api_key: str = "test") -> subprocess.CompletedProcess[str]:
    project = _project(tmp_path)
    home = tmp_path / "codex-home"
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{MODEL}"\n'
        'model_provider = "ccgate"\n'
        "[model_providers.ccgate]\n"
        'name = "ccgate"\n'
        f'base_url = "{gateway.url}/v1"\n'
        'env_key = "CCGATE_KEY"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )
    env = {**_base_env(tmp_path), "CODEX_HOME": str(home), "CCGATE_KEY": api_key}
    command = [
        agent_binary("codex"),
        "exec",
        "--skip-git-repo-check",
        "--json",
        "--dangerously-bypass-approvals-and-sandbox",  # no user namespaces for a sandbox in here
        "read a.txt",
    ]
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )


def run_qwen(gateway: Process, tmp_path: Path, api_key: str = "test") -> subprocess.CompletedProcess[str]:
    """Qwen Code reads only absolute paths inside its workspace, so its project is the fixed
    folder the scripted `qwen` model names."""
    project = Path(QWEN_PROJECT)
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    (project / "a.txt").write_text(FILE_TEXT)
    env = {
        **_base_env(tmp_path),
        "OPENAI_BASE_URL": gateway.url + "/v1",
        "OPENAI_API_KEY": api_key,
        "OPENAI_MODEL": MODEL,
    }
    command = [agent_binary("qwen"), "-p", "read a.txt", "--output-format", "json", "--yolo"]
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def assert_opencode_read_the_file(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    seen = events(done.stdout)
    tools = [e["part"] for e in seen if e.get("type") == "tool_use"]
    assert [t["tool"] for t in tools] == ["read"], seen
    assert tools[0]["state"]["status"] == "completed"
    assert "hi from the project" in json.dumps(tools[0]["state"]["output"])  # the tool really ran
    texts = [e["part"]["text"] for e in seen if e.get("type") == "text"]
    assert texts and texts[-1].strip() == FINAL


def assert_codex_ran_the_command(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    items = [e["item"] for e in events(done.stdout) if e.get("type") == "item.completed"]
    commands = [i for i in items if i.get("type") == "command_execution"]
    assert commands and "cat a.txt" in commands[0]["command"], items
    assert "hi from the project" in commands[0]["aggregated_output"]  # the shell really ran it
    messages = [i["text"] for i in items if i.get("type") == "agent_message"]
    assert messages and messages[-1].strip() == FINAL


@pytest.fixture
def agent_gateway(start_ccgate, start_llama_server):
    def start(model: str) -> Process:
        llama = start_llama_server(model, "-np", "2")
        return start_ccgate({"local": {"kind": "llamacpp", "url": llama.url}})

    return start


def served(gateway: Process, client: str) -> float:
    """Requests the gateway answered for this client kind (told apart by User-Agent)."""
    return total(scrape(gateway), "ccgate_requests_total", client=client, outcome="ok")


@pytest.mark.cli
def test_opencode_reads_a_file_through_ccgate(agent_gateway, tmp_path: Path) -> None:
    gw = agent_gateway("opencode")
    assert_opencode_read_the_file(run_opencode(gw, tmp_path))
    assert served(gw, "opencode") >= 2  # its tool-less title request, then the two turns


@pytest.mark.cli
def test_codex_runs_a_command_through_ccgate(agent_gateway, tmp_path: Path) -> None:
    gw = agent_gateway("codex")
    assert_codex_ran_the_command(run_codex(gw, tmp_path))
    assert served(gw, "codex") >= 2


@pytest.mark.cli
def test_opencode_survives_a_call_to_a_tool_it_never_offered(start_ccgate, start_llama_server, tmp_path: Path) -> None:
    """llama-server refuses such a call (its grammar: HTTP 500, or an error chunk in a stream);
    Opencode alone would retry it for a minute. ccgate moves the request to the next backend
    before any byte went out."""
    wild = start_llama_server("unoffered", "-np", "1")
    good = start_llama_server("opencode", "-np", "1")
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": wild.url}, "spare": {"kind": "llamacpp", "url": good.url}},
        to=["local", "spare"],
    )
    assert_opencode_read_the_file(run_opencode(gw, tmp_path))
    samples = scrape(gw)
    # both turns with tools; the tool-less title request is answered by `local` itself
    # (llama-server's Chat Completions stream says it in an error chunk: reason `broken`, not `5xx`)
    assert total(samples, "ccgate_fallbacks_total", from_backend="local", to_backend="spare") >= 2


@pytest.mark.cli
def test_both_agents_with_team_keys(make_team, start_llama_server, tmp_path: Path) -> None:
    llama = start_llama_server("opencode", "-np", "2")
    codex_llama = start_llama_server("codex", "-np", "2")
    team = make_team(
        {"oc": {"kind": "llamacpp", "url": llama.url}, "cx": {"kind": "llamacpp", "url": codex_llama.url}},
        extra={"rules": [{"name": "codex", "when": {"client": "codex"}, "to": ["cx"]}, {"name": "d", "to": ["oc"]}]},
        replicas=1,
    )
    alice = team.add_key("alice", "core")
    bob = team.add_key("bob", "core")
    gw = team.replicas[0]
    assert_opencode_read_the_file(run_opencode(gw, tmp_path / "alice", api_key=alice))
    assert_codex_ran_the_command(run_codex(gw, tmp_path / "bob", api_key=bob))
    refused = run_codex(gw, tmp_path / "mallory", api_key="ccg-" + "x" * 43)
    assert refused.returncode != 0 and "unknown team key" in refused.stdout + refused.stderr

    def spent() -> dict[str, int]:
        usage = team.cli("usage", "--by", "key", "--json")
        assert usage.returncode == 0, usage.stderr
        return {row["key"]: row["input"] + row["cached"] for row in json.loads(usage.stdout)["usage"]}

    # a stream's usage is written as it closes, a moment after the agent has its answer
    wait_until(lambda: set(spent()) == {"alice", "bob"} and all(spent().values()), "usage of both keys")


@pytest.mark.cli
def test_qwen_code_reads_a_file_through_ccgate(agent_gateway, tmp_path: Path) -> None:
    gw = agent_gateway("qwen")
    done = run_qwen(gw, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    assert FINAL in done.stdout
    assert "hi from the project" in done.stdout  # the tool's result, in its transcript
    assert served(gw, "qwen-code") >= 2


@pytest.mark.cli
def test_every_agent_shows_a_refused_key_to_the_person_at_once(make_team, text_llama: Process, tmp_path: Path) -> None:
    """A wrong team key is a 403 with x-should-retry: false: each agent prints ccgate's message and
    stops (a 401 is retried silently by Claude Code for about three minutes, measured), and each
    refusal is one log line with its status, reason and client."""
    team = make_team({"local": {"kind": "llamacpp", "url": text_llama.url}}, replicas=1)
    gw = team.replicas[0]
    wrong = "ccg-" + "w" * 43
    runs = {
        "claude-cli": lambda: run_claude(gw, tmp_path / "claude", env={"ANTHROPIC_AUTH_TOKEN": wrong}),
        "codex": lambda: run_codex(gw, tmp_path / "codex", api_key=wrong),
        "opencode": lambda: run_opencode(gw, tmp_path / "opencode", api_key=wrong),
        "qwen-code": lambda: run_qwen(gw, tmp_path / "qwen", api_key=wrong),
    }
    with ThreadPoolExecutor(len(runs)) as pool:
        done = dict(zip(runs, pool.map(lambda run: run(), runs.values()), strict=True))
    for client, result in done.items():
        said = result.stdout + result.stderr
        assert "unknown team key" in said, f"{client} did not show the refusal: {said[-2000:]}"
        if client != "qwen-code":  # Qwen Code 0.15 -p --output-format json exits 0, its result the error
            assert result.returncode != 0, client
    samples = scrape(gw)
    for client in runs:
        refused = total(samples, "ccgate_requests_total", client=client, outcome="unauthorized")
        assert 1 <= refused <= 2, f"{client} sent {refused} refused requests: it retried"  # Opencode: title + turn
    lines = [json.loads(line) for line in gw.log.read_text().splitlines() if line.startswith("{")]
    logged = {line["client"] for line in lines if line.get("status") == 403 and line.get("reason") == "unknown key"}
    assert logged == set(runs), lines[-10:]
