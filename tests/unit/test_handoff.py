"""A conversation crossing between local models and the Anthropic API: what is dropped, what is
kept byte for byte, when thinking goes, and what a local answer is marked with."""

from __future__ import annotations

import json

import msgspec

from router.protocol.handoff import MARK, Marks, for_anthropic, safe_tool_id
from router.protocol.marking import ReplyMarker, mark_message
from router.protocol.sse import SSEDecoder, encode_event

MARKS = Marks(b"test-secret")
# A block the API signed, written the way Claude Code writes it back (spacing and escapes of its own).
CLOUD = b'{"type": "thinking", "thinking": "Let me look\\u00e9 at \\"a.txt\\".", "signature": "EqQBCkgIAhABGAIiQL"}'


def body_of(messages: list, thinking: dict | None = None) -> bytes:
    """A request body as bytes, with the cloud block's own bytes spliced in where `CLOUD` stands."""
    top = {"model": "claude-opus-4-8", "max_tokens": 1024, "messages": messages}
    if thinking:
        top["thinking"] = thinking
    text = json.dumps(top, indent=1)
    return text.replace('"CLOUD"', CLOUD.decode()).encode()


def local_turn(thinking: bool = True, call: bool = True) -> dict:
    content = []
    if thinking:
        content.append(
            {"type": "thinking", "thinking": "I should read it.", "signature": MARKS.signature("I should read it.")}
        )
    content.append({"type": "text", "text": "Reading."})
    if call:
        content.append({"type": "tool_use", "id": MARKS.tool_id(), "name": "Read", "input": {"file_path": "a.txt"}})
    return {"role": "assistant", "content": content}


def tool_result(turn: dict) -> dict:
    tool_id = next(b["id"] for b in turn["content"] if b["type"] == "tool_use")
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": "hi"}]}


def run(body: bytes):  # type: ignore[no-untyped-def]
    return for_anthropic(body, msgspec.json.decode(body), MARKS)


def test_a_history_the_api_can_take_is_left_alone() -> None:
    cloud = {"role": "assistant", "content": ["CLOUD", {"type": "text", "text": "ok"}]}
    body = body_of(
        [{"role": "user", "content": "hi"}, cloud, {"role": "user", "content": "and?"}], {"type": "adaptive"}
    )
    assert run(body) is None


def test_local_thinking_is_dropped_and_the_apis_blocks_keep_their_bytes() -> None:
    cloud = {"role": "assistant", "content": ["CLOUD", {"type": "text", "text": "ok"}]}
    local = local_turn(call=False)
    unsigned = {
        "role": "assistant",
        "content": [{"type": "thinking", "thinking": "x", "signature": ""}, {"type": "text", "text": "y"}],
    }
    messages = [{"role": "user", "content": "a"}, cloud, {"role": "user", "content": "b"}, local]
    messages += [{"role": "user", "content": "c"}, unsigned, {"role": "user", "content": "d"}]
    handoff = run(body_of(messages, {"type": "adaptive"}))
    assert handoff is not None and handoff.dropped == 2 and not handoff.thinking_off
    assert CLOUD in handoff.body  # byte for byte: never re-serialised
    kinds = [[b["type"] for b in m["content"]] for m in handoff.raw["messages"] if m["role"] == "assistant"]
    assert kinds == [["thinking", "text"], ["text"], ["text"]]
    assert handoff.raw["thinking"] == {"type": "adaptive"}
    assert handoff.describe() == "dropped 2 thinking blocks not issued by the API"


def test_a_local_tool_loop_turn_left_without_thinking_turns_thinking_off() -> None:
    for with_thinking in (True, False):  # its thinking dropped, or it never had any
        local = local_turn(thinking=with_thinking)
        body = body_of(
            [{"role": "user", "content": "read a.txt"}, local, tool_result(local)],
            {"type": "enabled", "budget_tokens": 2048},
        )
        handoff = run(body)
        assert handoff is not None and handoff.thinking_off
        assert "thinking" not in handoff.raw
        assert handoff.raw["messages"][1]["content"][0]["type"] == "text"


def test_the_apis_own_tool_loop_turn_is_never_touched() -> None:
    cloud = {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Reading."},
            {"type": "tool_use", "id": "toolu_01A", "name": "Read", "input": {}},
        ],
    }
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "hi"}]}
    assert run(body_of([{"role": "user", "content": "read"}, cloud, result], {"type": "adaptive"})) is None


def test_with_thinking_enabled_a_tool_turn_without_thinking_goes_without_it_whoever_wrote_it() -> None:
    """A conversation begun straight against llama-server, then pointed at ccgate: its last turn
    carries no mark of ccgate's, but the API refuses it all the same (the body alone says so)."""
    elsewhere = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "call_0a1b2c", "name": "Read", "input": {"file_path": "a.txt"}}],
    }
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_0a1b2c", "content": "hi"}]}
    handoff = run(
        body_of([{"role": "user", "content": "read"}, elsewhere, result], {"type": "enabled", "budget_tokens": 2048})
    )
    assert handoff is not None and handoff.thinking_off and "thinking" not in handoff.raw
    assert "thinking off" in handoff.describe()


def test_the_apis_own_later_loop_steps_keep_thinking_on() -> None:
    """Without interleaved thinking the API thinks once per turn: step two of its own tool loop
    carries only a tool_use, and the API takes that history as it is."""
    step_one = {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "read it", "signature": "EqSignedByTheAPI"},
            {"type": "tool_use", "id": "toolu_01A", "name": "Read", "input": {}},
        ],
    }
    result_a = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A", "content": "hi"}]}
    step_two = {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01B", "name": "Read", "input": {}}]}
    result_b = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01B", "content": "ho"}]}
    history = [{"role": "user", "content": "read"}, step_one, result_a, step_two, result_b]
    assert run(body_of(history, {"type": "enabled", "budget_tokens": 2048})) is None


def test_thinking_stays_when_a_new_user_turn_ends_the_loop() -> None:
    local = local_turn()
    messages = [
        {"role": "user", "content": "read"},
        local,
        tool_result(local),
        {"role": "assistant", "content": "done"},
    ]
    messages.append({"role": "user", "content": "thanks, now what?"})
    handoff = run(body_of(messages, {"type": "adaptive"}))
    assert handoff is not None and not handoff.thinking_off and handoff.raw["thinking"] == {"type": "adaptive"}


def test_tool_ids_the_api_would_refuse_are_renamed_the_same_way_everywhere() -> None:
    call = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "functions.Read:0", "name": "Read", "input": {}}],
    }
    result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "functions.Read:0", "content": "hi"}]}
    handoff = run(body_of([{"role": "user", "content": "read"}, call, result]))
    assert handoff is not None and handoff.renamed_ids == 2
    new = handoff.raw["messages"][1]["content"][0]["id"]
    assert new == handoff.raw["messages"][2]["content"][0]["tool_use_id"] == safe_tool_id("functions.Read:0")
    assert new.startswith("functions_Read_0_")


def test_a_turn_that_held_only_local_thinking_is_left_out() -> None:
    only = {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": ""}]}
    handoff = run(body_of([{"role": "user", "content": "a"}, only, {"role": "user", "content": "b"}]))
    assert handoff is not None and handoff.empty_turns == 1
    assert [m["role"] for m in handoff.raw["messages"]] == ["user", "user"]


def test_marks_are_ours_and_cannot_be_forged_without_the_secret() -> None:
    signature = MARKS.signature("because")
    assert signature.startswith(MARK) and MARKS.is_ours(signature, "because")
    assert not MARKS.is_ours(signature, "because!") and not Marks(b"other").is_ours(signature, "because")
    tool_id = MARKS.tool_id()
    assert MARKS.is_our_tool_id(tool_id) and not Marks(b"other").is_our_tool_id(tool_id)
    assert not MARKS.is_our_tool_id("toolu_ccg" + "0" * 32)


def llama_stream(signature_delta: bool = True) -> bytes:
    """What llama-server streams for a reasoning model's tool call (empty signature)."""
    events = [
        encode_event("message_start", {"type": "message_start", "message": {"id": "m", "content": [], "usage": {}}}),
        encode_event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
        ),
        encode_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "I should "}},
        ),
        encode_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "read it."}},
        ),
    ]
    if signature_delta:
        events.append(
            encode_event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": ""}},
            )
        )
    events += [
        encode_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        encode_event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "abcDEF123", "name": "Read", "input": {}},
            },
        ),
        encode_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        ),
        encode_event("content_block_stop", {"type": "content_block_stop", "index": 1}),
        encode_event("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(events)


def test_a_local_stream_is_signed_and_its_tool_ids_are_ours() -> None:
    for with_delta in (True, False):
        raw = llama_stream(with_delta)
        for size in (7, 64, len(raw)):
            marker = ReplyMarker(MARKS)
            out = b"".join(marker.feed(raw[i : i + size]) for i in range(0, len(raw), size)) + marker.finish()
            events = [(e.event, json.loads(e.data)) for e in SSEDecoder().feed(out)]
            signatures = [
                d["delta"]["signature"] for _, d in events if d.get("delta", {}).get("type") == "signature_delta"
            ]
            assert signatures == [MARKS.signature("I should read it.")], (with_delta, size)
            stop = next(i for i, (name, d) in enumerate(events) if name == "content_block_stop" and d["index"] == 0)
            assert events[stop - 1][1]["delta"]["type"] == "signature_delta"  # before the block ends
            [tool] = [d["content_block"] for _, d in events if d.get("content_block", {}).get("type") == "tool_use"]
            assert MARKS.is_our_tool_id(tool["id"])


def test_a_whole_local_message_is_marked_the_same_way() -> None:
    message = {
        "type": "message",
        "content": [
            {"type": "thinking", "thinking": "hm", "signature": ""},
            {"type": "tool_use", "id": "x", "name": "Read", "input": {}},
        ],
    }
    marked = json.loads(mark_message(json.dumps(message).encode(), MARKS))
    assert MARKS.is_ours(marked["content"][0]["signature"], "hm")
    assert MARKS.is_our_tool_id(marked["content"][1]["id"])
    plain = json.dumps({"type": "message", "content": [{"type": "text", "text": "hi"}]}).encode()
    assert mark_message(plain, MARKS) is plain


def test_llama_servers_interleaved_blocks_pass_the_guard_whole() -> None:
    """llama-server opens the tool_use block before it sends the thinking block's signature and
    stop: the guard must keep each event with its own block."""
    from router.protocol.tool_check import ToolBox
    from router.protocol.tool_guard import ToolCallGuard

    def event(name: str, payload: dict) -> bytes:
        return encode_event(name, payload)

    raw = b"".join(
        [
            event("message_start", {"type": "message_start", "message": {"id": "m", "content": [], "usage": {}}}),
            event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
            ),
            event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
            ),
            event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "tool_use", "id": "abc", "name": "Read"},
                },
            ),
            event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": '{"file_path": "a.txt"}'},
                },
            ),
            event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": ""}},
            ),
            event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event("content_block_stop", {"type": "content_block_stop", "index": 1}),
            event("message_stop", {"type": "message_stop"}),
        ]
    )
    tools = ToolBox(
        [{"name": "Read", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}}]
    )
    guard = ToolCallGuard(tools)
    out = b"".join(guard.feed(raw) + guard.finish())
    events = [json.loads(e.data) for e in SSEDecoder().feed(out)]
    by_index: dict[int, list[str]] = {}
    for e in events:
        if "index" in e:
            by_index.setdefault(e["index"], []).append(
                e.get("delta", e.get("content_block", {})).get("type", e["type"])
            )
    assert by_index[0] == ["thinking", "thinking_delta", "signature_delta", "content_block_stop"]
    assert by_index[1] == ["tool_use", "input_json_delta", "content_block_stop"]
    assert guard.outcomes == ["passed"]
