"""Simulated Claude Code sessions built from a real captured request (tests and bench/prefix_affinity.py).

Each session is made its own the way real ones are: its working directory in the system
prompt's environment section, and its own billing-header value. Each turn appends the model's
answer and a new user message, as Claude Code does.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "claude-code-request-turn1.json"
CAPTURED_CWD = "/home/dev/demo-app"


def first_turn(session: str, max_tokens: int = 64, stream: bool = False) -> dict:
    body = json.loads(FIXTURE.read_text())["body"]
    body = {**body, "stream": stream, "max_tokens": max_tokens}
    system = copy.deepcopy(body["system"])
    for block in system:
        block["text"] = block["text"].replace(CAPTURED_CWD, f"/home/dev/{session}")
        if block["text"].startswith("x-anthropic-billing-header:"):
            block["text"] = f"x-anthropic-billing-header: cc_version=2.1.197.{session[:3]}; cc_entrypoint=cli;"
    body["system"] = system
    return body


def next_turn(body: dict, answer: str, turn: int, billing: str | None = None) -> dict:
    """The request after `body` was answered with `answer`; `billing`: a new billing value."""
    nxt = copy.deepcopy(body)
    nxt["messages"] += [
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        {"role": "user", "content": [{"type": "text", "text": f"turn {turn}: good, now the next step please"}]},
    ]
    if billing is not None:
        nxt["system"][0]["text"] = f"x-anthropic-billing-header: cc_version=2.1.197.{billing}; cc_entrypoint=cli;"
    return nxt


def conversation(session: str, turns: int, answer: str = "Hello from the scripted model.") -> list[dict]:
    bodies = [first_turn(session)]
    for turn in range(1, turns):
        bodies.append(next_turn(bodies[-1], answer, turn))
    return bodies
