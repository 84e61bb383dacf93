"""`ccgate doctor` as a user runs it, against real llama-servers that do and do not call tools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness.procs import Process, free_port

ROOT = Path(__file__).resolve().parents[2]


def doctor(policy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "router.cli", "doctor", "--config", str(policy), *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture
def servers(start_llama_server, tool_llama: Process, text_llama: Process, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "slots").mkdir()
    return {
        "good": tool_llama.url,
        "chatml": start_llama_server("tool", "-np", "1", "--chat-template", "chatml").url,
        "broken": start_llama_server("broken", "-np", "1").url,
        "small": start_llama_server("text", "-np", "1", "-c", "8192", "--slot-save-path", f"{tmp_path}/slots/").url,
        "down": f"http://127.0.0.1:{free_port()}",
    }


@pytest.fixture
def policy(tmp_path: Path, servers: dict[str, str]) -> Path:
    backends: dict[str, dict] = {name: {"kind": "llamacpp", "url": url} for name, url in servers.items()}
    backends["vllm_like"] = {"kind": "openai", "url": servers["small"] + "/v1"}
    backends["cloud"] = {"kind": "anthropic", "url": "https://api.anthropic.com"}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"backends": backends, "rules": [{"name": "default", "to": list(backends)}]}))
    return path


def checks_of(report: dict) -> dict[str, dict]:
    return {check["name"]: check for check in report["checks"]}


PROBES = [f"tool call {d}{s}" for d in ("anthropic", "openai", "responses") for s in ("", " stream")]


def test_doctor_tells_each_failure_and_its_fix(policy: Path) -> None:
    result = doctor(policy, "--json")
    assert result.returncode == 1, result.stderr
    reports = {r["backend"]: r for r in json.loads(result.stdout)}

    good = checks_of(reports["good"])
    assert reports["good"]["ok"] and all(good[name]["status"] == "ok" for name in PROBES)
    assert "Read(" in good["tool call anthropic"]["detail"]

    chatml = checks_of(reports["chatml"])
    assert chatml["chat template"]["status"] == "fail"
    assert "ignores tools (generic ChatML)" in chatml["chat template"]["detail"]
    assert "--chat-template-file" in chatml["chat template"]["fix"]
    for name in PROBES:
        assert chatml[name]["status"] == "fail" and "came back as text (hermes" in chatml[name]["detail"]

    broken = checks_of(reports["broken"])
    for name in PROBES:
        assert broken[name]["status"] == "fail" and "grammar" in broken[name]["detail"]
        assert "malformed call" in broken[name]["fix"]

    small = checks_of(reports["small"])
    assert (
        small["context"]["status"] == "fail" and "8192 < Claude Code's ~20k-token prompt" in small["context"]["detail"]
    )
    assert "raise -c" in small["context"]["fix"]
    assert (small["slot files"]["status"], small["slot files"]["detail"]) == (
        "ok",
        "saved and restored (up to 2 files)",
    )
    assert good["slot files"]["status"] == "warn" and "--slot-save-path DIR" in good["slot files"]["fix"]
    for name in PROBES:
        assert small[name]["status"] == "fail" and small[name]["detail"].startswith("no tool call returned")

    vllm_like = checks_of(reports["vllm_like"])
    assert set(vllm_like) >= {"tool call openai", "tool call openai stream"} and "tool call anthropic" not in vllm_like
    assert "tool call responses" not in vllm_like
    assert vllm_like["tool call openai"]["detail"].startswith("no tool call returned")

    down = checks_of(reports["down"])
    assert down["reachable"]["status"] == "fail" and "connection refused" in down["reachable"]["detail"]
    assert "llama-server -m" in down["reachable"]["fix"] and set(down) == {"egress", "reachable"}
    assert (down["egress"]["status"], down["egress"]["detail"]) == ("ok", "direct")

    assert checks_of(reports["cloud"])["reachable"]["status"] == "skip"


def test_doctor_passes_a_good_backend(policy: Path) -> None:
    result = doctor(policy, "--backend", "good")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "good (llamacpp," in result.stdout and "tool calling works" in result.stdout
    assert "FAIL" not in result.stdout


def test_doctor_rejects_an_unknown_backend(policy: Path) -> None:
    result = doctor(policy, "--backend", "nope")
    assert result.returncode == 2 and "no backend named nope" in result.stderr


def test_doctor_says_when_llama_server_wants_a_key(tmp_path: Path, start_llama_server) -> None:
    """llama-server --api-key answers /health to anyone, 401 to the rest: a missing key is a failure."""
    secured = start_llama_server("tool", "-np", "1", "--api-key", "sk-local-llama-key")
    path = tmp_path / "policy.yaml"
    backends = {"secured": {"kind": "llamacpp", "url": secured.url}}
    path.write_text(yaml.safe_dump({"backends": backends, "rules": [{"name": "default", "to": ["secured"]}]}))
    result = doctor(path, "--json", "--timeout", "60")
    assert result.returncode == 1, result.stderr
    credentials = checks_of(json.loads(result.stdout)[0])["credentials"]
    assert credentials["status"] == "fail" and "/props refused" in credentials["detail"]
    assert "api_key" in credentials["fix"]
