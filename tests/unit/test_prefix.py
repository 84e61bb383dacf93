"""Block hashes of the prompt as the client sent it: stable where the model's input is, volatile parts ignored."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import msgspec

from router.policy.prefix import BLOCK, block_hashes, hashed, without_billing_header

FIXTURES = Path(__file__).parents[1] / "fixtures"


def turn(name: str) -> dict:
    return json.loads((FIXTURES / f"claude-code-request-{name}.json").read_text())["body"]


def test_a_claude_code_prompt_is_many_blocks() -> None:
    hashes, size = hashed(turn("turn1"))
    assert len(hashes) == size // BLOCK >= 30
    assert len(set(hashes)) == len(hashes)


def test_only_the_prompt_counts_not_the_request_around_it() -> None:
    body = turn("turn1")
    other = {**body, "max_tokens": 1, "stream": not body.get("stream"), "temperature": 0.3, "model": "x"}
    other = {"metadata": {"user_id": "u"}, **other}  # and a field before the prompt
    assert block_hashes(other) == block_hashes(body)


def test_a_client_that_spaces_its_json_gets_the_same_chain_turn_after_turn() -> None:
    """The Python SDK writes `", "` and `": "`: its markers move and its chain still extends."""
    first, second = turn("turn1"), turn("turn2-tool-result")
    spaced = [json.dumps(first).encode(), json.dumps(second).encode()]
    assert b'"cache_control": {' in spaced[0]
    a, b = block_hashes(spaced[0]), block_hashes(spaced[1])
    assert len(b) >= len(a) >= 30 and b[: len(a)] == a
    assert a != block_hashes(msgspec.json.encode(first))  # its own bytes: another client's chain


def test_a_body_that_is_not_a_request_has_no_blocks() -> None:
    assert hashed(b"[1, 2]") == ([], 0)
    assert hashed(b'{"messages": 3}') == ([], 0)


def test_the_next_turn_extends_the_chain() -> None:
    first, second = block_hashes(turn("turn1")), block_hashes(turn("turn2-tool-result"))
    assert second[: len(first)] == first


def test_any_earlier_change_changes_every_later_hash() -> None:
    body = turn("turn1")
    changed = copy.deepcopy(body)
    changed["system"][2]["text"] = changed["system"][2]["text"].replace("software", "hardware", 1)
    a, b = block_hashes(body), block_hashes(changed)
    first_diff = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert all(x != y for x, y in zip(a[first_diff:], b[first_diff:], strict=False))


def test_volatile_parts_are_ignored() -> None:
    body = turn("turn1")
    noisy = copy.deepcopy(body)
    noisy["system"][0]["text"] = "x-anthropic-billing-header: cc_version=9.9.9.abc; cc_entrypoint=cli;"
    noisy["metadata"] = {"user_id": "someone else"}
    for block in noisy["system"]:
        block["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    noisy["messages"][0]["content"][0]["cache_control"] = {"type": "ephemeral"}
    noisy["tools"][-1]["cache_control"] = {"type": "ephemeral"}
    assert block_hashes(noisy) == block_hashes(body)


def test_what_the_model_reads_is_not_ignored() -> None:
    body = turn("turn1")
    other_cwd = copy.deepcopy(body)
    other_cwd["messages"][0]["content"][0]["text"] += " (in /home/someone/else)"
    assert block_hashes(other_cwd)[-1] != block_hashes(body)[-1]


def test_billing_header_removal_keeps_the_rest() -> None:
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=1;"},
        {"type": "text", "text": "You are"},
    ]
    assert without_billing_header(system) == [{"type": "text", "text": "You are"}]
    assert without_billing_header("plain") == "plain"
