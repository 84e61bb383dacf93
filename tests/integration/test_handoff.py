"""A conversation moves between the local model and the cloud mid-session without breaking.

The local model is a real llama-server running a scripted model that reasons and calls Read
(`think_tool`), or that reasons, calls Read, and then writes a malformed call after the tool
result (`think_break`: llama-server answers HTTP 500, so the tool loop's next turn moves to the
cloud, a handoff in the middle of a tool loop). The cloud is tests/harness/anthropic_standin.py,
which holds every request to the API's documented rules on thinking blocks (see its docstring).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.harness.procs import Process
from tests.harness.wait import wait_until
from tests.integration.test_claude_cli import blocks, run_claude
from tests.integration.test_metrics import scrape, value
from tests.integration.test_passthrough import READ_TOOL

CLOUD_FINAL = "The file a.txt says hi (from the cloud)."
LOCAL_FINAL = "The file a.txt says hi."


def received(standin: Process) -> list[str]:
    return httpx.get(standin.url + "/_requests", timeout=10).json()


def ask(messages: list[dict], stream: bool = False) -> dict:
    return {
        "model": "claude-opus-4-8",
        "max_tokens": 1024,
        "stream": stream,
        "thinking": {"type": "adaptive"},
        "tools": [READ_TOOL],
        "messages": messages,
    }


def post(gw: Process, messages: list[dict], stream: bool) -> tuple[httpx.Response, dict]:
    """The answer as a whole message, whether it came streamed or not."""
    r = httpx.post(gw.url + "/v1/messages", json=ask(messages, stream), timeout=120)
    assert r.status_code == 200, r.text
    if not stream:
        return r, r.json()
    from router.protocol.aggregate import MessageAggregator
    from router.protocol.sse import SSEDecoder

    aggregator = MessageAggregator()
    for event in SSEDecoder().feed(r.content):
        aggregator.feed(event)
    return r, aggregator.message()


def tool_result(answer: dict) -> dict:
    [call] = [b for b in answer["content"] if b["type"] == "tool_use"]
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "hi"}]}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_session_moves_to_the_cloud_and_back(
    start_ccgate, start_llama_server, standin: Process, owned, stream: bool
) -> None:
    local = start_llama_server("think_break", "-np", "1")
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": local.url}, "cloud": {"kind": "anthropic", "url": standin.url}}
    )
    history: list[dict] = [{"role": "user", "content": "read a.txt"}]

    # 1. local: it reasons and calls Read; its thinking and its call carry ccgate's marks
    r, answer = post(gw, history, stream)
    assert r.headers["x-ccgate-backend"] == "local"
    thinking, call = answer["content"][0], answer["content"][-1]
    assert thinking["type"] == "thinking" and thinking["signature"].startswith("ccgate:")
    assert call["type"] == "tool_use" and call["id"].startswith("toolu_ccg")
    history += [{"role": "assistant", "content": answer["content"]}, tool_result(answer)]

    # The history as it stands breaks the API's rules: the stand-in says so, as the API would.
    direct = httpx.post(standin.url + "/v1/messages", json=ask(history), timeout=30)
    assert direct.status_code == 400 and "Invalid `signature` in `thinking` block" in direct.text

    # 2. the tool loop's next turn: local breaks (HTTP 500), the cloud takes it mid-loop
    r, answer = post(gw, history, stream)
    assert r.headers["x-ccgate-backend"] == "cloud"
    assert "dropped 1 thinking block not issued by the API" in r.headers["x-ccgate-handoff"]
    assert "thinking off" in r.headers["x-ccgate-handoff"]
    assert [b["type"] for b in answer["content"]] == ["text"] and answer["content"][0]["text"] == CLOUD_FINAL
    history.append({"role": "assistant", "content": answer["content"]})

    # 3. the local server goes away: a new user turn, and a whole tool loop in the cloud
    local.stop()
    history.append({"role": "user", "content": "read it once more"})
    r, answer = post(gw, history, stream)
    assert r.headers["x-ccgate-backend"] == "cloud"
    cloud_thinking = answer["content"][0]
    assert cloud_thinking["type"] == "thinking" and cloud_thinking["signature"].startswith("Eq")
    history += [{"role": "assistant", "content": answer["content"]}, tool_result(answer)]
    r, answer = post(gw, history, stream)
    assert r.headers["x-ccgate-backend"] == "cloud" and answer["content"][-1]["text"] == CLOUD_FINAL
    history.append({"role": "assistant", "content": answer["content"]})
    # the API's own block reached it byte for byte, as the client sent it
    sent = json.dumps(cloud_thinking, separators=(",", ":"))
    assert sent in received(standin)[-1]

    # 4. the local server is back: the conversation, cloud thinking and all, goes local again
    owned(Process(local.name, local.args, local.port, local.log).start("/health"))
    wait_until(
        lambda: httpx.get(gw.url + "/readyz", timeout=10).json()["backends"]["local"]["available"],
        "ccgate saw the local server back",
    )
    history.append({"role": "user", "content": "and one last time"})
    r, answer = post(gw, history, stream)
    assert r.headers["x-ccgate-backend"] == "local" and answer["content"][-1]["type"] == "tool_use"

    samples = scrape(gw)
    assert value(samples, "ccgate_handoffs_total", backend="cloud", action="thinking_off") == 1
    assert value(samples, "ccgate_handoffs_total", backend="cloud", action="dropped_thinking") == 3


@pytest.mark.cli
def test_claude_code_keeps_its_session_across_the_box_and_the_cloud(
    start_ccgate, start_llama_server, standin: Process, owned, tmp_path: Path
) -> None:
    """The real Claude Code CLI: its first turns local (reasoning, a Read call), the tool loop's
    next turn in the cloud, then the local server stops and the session goes on in the cloud,
    then it comes back. Every turn succeeds; the stand-in's signed thinking comes back unchanged."""
    local = start_llama_server("think_break", "-np", "1")
    gw = start_ccgate(
        {"local": {"kind": "llamacpp", "url": local.url}, "cloud": {"kind": "anthropic", "url": standin.url}}
    )

    def session(prompt: str, *more: str) -> list[dict]:
        done = run_claude(gw, tmp_path, "--output-format", "stream-json", "--verbose", *more, prompt=prompt)
        assert done.returncode == 0, done.stderr + done.stdout[-3000:]
        messages = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        [result] = [m for m in messages if m["type"] == "result"]
        assert result["subtype"] == "success" and not result["is_error"], result
        assert result["result"] == CLOUD_FINAL, result
        return messages

    first = session("read a.txt")
    calls = blocks(first, "assistant", "tool_use")
    assert calls and calls[0]["id"].startswith("toolu_ccg")  # the local model's call
    assert any("thinking off" in line for line in gw.log.read_text().splitlines() if '"handoff"' in line)

    local.stop()
    second = session("read it once more", "--continue")
    cloud_calls = blocks(second, "assistant", "tool_use")
    assert cloud_calls and cloud_calls[-1]["id"].startswith("toolu_01")  # the cloud's own call

    owned(Process(local.name, local.args, local.port, local.log).start("/health"))
    wait_until(
        lambda: httpx.get(gw.url + "/readyz", timeout=10).json()["backends"]["local"]["available"],
        "ccgate saw the local server back",
    )
    session("and one last time", "--continue")

    bodies = received(standin)
    issued = {m.group(0) for body in bodies for m in re.finditer(r'"signature":\s*"Eq[^"]+"', body)}
    assert issued, "the stand-in's own thinking never came back"
    assert not any('"signature":"ccgate:' in body.replace(" ", "") for body in bodies)  # local thinking dropped
