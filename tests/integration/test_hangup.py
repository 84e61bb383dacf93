"""A client that hangs up frees the box in every phase of its request: while waiting for a slot,
while the real model processes its prompt (Esc during a cold Claude Code turn), and while it
streams; in each dialect, streamed or not. Proved from llama-server's own /slots and /metrics:
after the hang-up, the model generates nothing more for it, and the slot is free again.

The model is the real Gemma 3 270M: a scripted model processes any prompt at once, so only a real
one has a prompt-processing phase to hang up in.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading

import httpx
import pytest

from tests.harness.procs import Process
from tests.harness.team import ADMIN_TOKEN
from tests.harness.wait import wait_until
from tests.integration.test_errors import assert_slots_free

WORDS = ["lighthouse", "keeper", "harbour", "storm", "lantern", "gull", "rope", "tide", "cliff", "ledger"]


def long_prompt(tokens: int = 2500) -> str:
    """About `tokens` tokens, never seen before (a cached prefix would skip the phase under test)."""
    rng = secrets.SystemRandom()
    return secrets.token_hex(8) + " " + " ".join(rng.choice(WORDS) for _ in range(tokens))


def counter(llama: Process, name: str) -> float:
    for line in httpx.get(llama.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(f"llamacpp:{name} "):
            return float(line.split()[1])
    raise AssertionError(f"llama-server has no llamacpp:{name} (started without --metrics?)")


def predicted(llama: Process) -> float:
    """llama-server's count of every token it has generated."""
    return counter(llama, "tokens_predicted_total")


def processing(llama: Process) -> bool:
    return any(s["is_processing"] for s in httpx.get(llama.url + "/slots", timeout=10).json())


def open_request(gw: Process, path: str, body: dict, headers: dict[str, str] | None = None) -> socket.socket:
    """Send a request and return the socket without reading anything: closing it is the hang-up."""
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"host: 127.0.0.1:{gw.port}", "content-type: application/json"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()] + [f"content-length: {len(payload)}"]
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    return sock


def body_for(dialect: str, stream: bool, prompt: str) -> tuple[str, dict]:
    if dialect == "chat":
        return "/v1/chat/completions", {
            "model": "gemma",
            "max_tokens": 200,
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        }
    return "/v1/messages", {
        "model": "gemma",
        "max_tokens": 200,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
    }


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("dialect", ["anthropic", "chat"])
def test_a_hang_up_during_prompt_processing_generates_nothing(
    start_ccgate, gemma: Process, dialect: str, stream: bool
) -> None:
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": gemma.url, "runaway_guard": "off"}})
    assert_slots_free(gemma)
    before = predicted(gemma)
    path, body = body_for(dialect, stream, long_prompt())
    client = open_request(gw, path, body)
    wait_until(lambda: processing(gemma), "llama-server is processing the prompt", every=0.05)
    client.close()  # Esc, while the prompt is still being processed
    assert_slots_free(gemma)
    generated = predicted(gemma) - before
    # Straight to llama-server the same hang-up generates nothing: it checks the connection when
    # the prompt is done. Through ccgate the connection must be closed by then too (it was left
    # open: all 200 tokens were generated for nobody). ccgate streams from llama-server, which
    # notices a closed stream when a token's write fails: the first write after the close still
    # lands in the socket, the second does not, so one or two tokens.
    assert generated <= 3, f"llama-server generated {generated:g} tokens after the client had gone"


def test_a_hang_up_while_waiting_for_a_slot_never_reaches_the_box(make_team, gemma: Process) -> None:
    """`when_busy: wait`: the request waits in ccgate's queue; its client leaves; when the slot
    frees, nothing is started for it."""
    team = make_team({"local": {"kind": "llamacpp", "url": gemma.url, "runaway_guard": "off"}}, replicas=1)
    gw = team.replicas[0]
    holder_key = team.add_key("holder", "core")
    waiter_key = team.add_key("waiter", "core", "--when-busy", "wait", "--wait-seconds", "600")
    assert_slots_free(gemma)
    prompts_before = counter(gemma, "prompt_tokens_total")
    held: dict[str, int] = {}

    def hold() -> None:
        path, body = body_for("anthropic", False, long_prompt(300))
        # long enough to hold the slot while the test queues the waiter and hangs it up, on a
        # loaded machine too (with 40 tokens the slot freed first, and the waiter was sent)
        body["max_tokens"] = 400
        r = httpx.post(gw.url + path, json=body, headers={"x-api-key": holder_key}, timeout=600)
        held["status"] = r.status_code
        usage = r.json()["usage"] if r.status_code == 200 else {}
        held["prompt"] = usage.get("input_tokens", 0) + usage.get("cache_read_input_tokens", 0)

    holder = threading.Thread(target=hold)
    holder.start()
    wait_until(lambda: processing(gemma), "the holder's request is on the slot", every=0.05)
    path, body = body_for("anthropic", True, long_prompt(300))
    waiter = open_request(gw, path, body, {"x-api-key": waiter_key})

    def queued() -> bool:
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        for line in httpx.get(gw.url + "/metrics", headers=admin, timeout=10).text.splitlines():
            if line.startswith('ccgate_queue_waiting{backend="local"}'):
                return float(line.split()[1]) == 1
        return False

    wait_until(queued, "the second request waits in ccgate's queue")
    assert processing(gemma), "the holder finished before the waiter was hung up: nothing was tested"
    waiter.close()
    wait_until(lambda: not queued(), "the queue is empty again")
    holder.join(timeout=600)
    assert held["status"] == 200
    assert_slots_free(gemma)
    # the waiter's prompt (~300 tokens of its own) would have been processed had it reached the box
    processed = counter(gemma, "prompt_tokens_total") - prompts_before
    assert processed <= held["prompt"], f"{processed} prompt tokens processed, the holder's alone are {held['prompt']}"
