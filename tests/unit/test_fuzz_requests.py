"""Nothing a client sends makes the request path raise anything but a 400-class InvalidRequest,
and no tool schema makes the tool-call check raise anything but a verdict on the call."""

from __future__ import annotations

import contextlib

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.policy.features import features_of
from router.policy.prefix import hashed
from router.protocol.anthropic import InvalidRequest, MessagesRequest, decode_body, validate
from router.protocol.estimate import estimate_input_tokens
from router.protocol.to_openai import to_openai_request
from router.protocol.tool_check import ToolBox, ToolCallError

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
block_types = st.sampled_from(
    ["text", "image", "tool_use", "tool_result", "thinking", "document", "redacted_thinking", "x"]
)
inner_blocks = st.fixed_dictionaries(
    {"type": block_types}, optional={"text": json_values, "source": json_values, "content": json_values}
)
keywords = st.sampled_from(
    ["type", "properties", "items", "required", "enum", "pattern", "$ref", "anyOf", "oneOf", "not", "const",
     "additionalProperties", "patternProperties", "minimum", "maxLength", "format", "$schema", "$defs", "$id"]
)  # fmt: skip
type_names = st.sampled_from(["object", "string", "integer", "number", "boolean", "array", "null"])
schemas = st.recursive(
    st.fixed_dictionaries({}, optional={"type": type_names | json_values}) | st.booleans(),
    lambda inner: st.dictionaries(keywords, inner | json_values | st.dictionaries(st.text(max_size=4), inner)),
    max_leaves=10,
)
blocks = st.fixed_dictionaries(
    {"type": block_types},
    optional={
        "text": json_values,
        "id": json_values,
        "name": json_values,
        "input": json_values,
        "tool_use_id": json_values,
        # a tool result's content: text, or a list of blocks, or of anything at all
        "content": json_values | st.lists(inner_blocks | scalars, max_size=3),
        "source": st.fixed_dictionaries({}, optional={"type": json_values, "data": json_values, "url": json_values}),
        "thinking": json_values,
    },
)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool"]),
            "content": st.text(max_size=5) | st.lists(blocks, max_size=3),
        }
    ),
    max_size=4,
)
bodies = st.fixed_dictionaries(
    {"model": st.text(max_size=5) | st.integers(), "max_tokens": st.integers(-2, 2**40), "messages": messages},
    optional={
        "system": st.text(max_size=5) | st.lists(blocks, max_size=2),
        "tools": st.lists(
            st.dictionaries(st.sampled_from(["name", "type", "input_schema", "description"]), json_values), max_size=2
        )
        | st.lists(st.fixed_dictionaries({"name": st.sampled_from(["Read", "Bash"]), "input_schema": schemas})),
        "tool_choice": json_values,
        "stream": json_values,
        "thinking": json_values,
        "temperature": json_values,
        "stop_sequences": json_values,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_request_path_only_raises_invalid_request(body: dict) -> None:
    raw = decode_body(msgspec.json.encode(body))
    try:
        request = validate(raw, MessagesRequest)
        to_openai_request(request, "m")
    except InvalidRequest:
        return
    estimate_input_tokens(raw)
    features_of(request, raw, {})
    hashed(raw)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas, json_values | st.text(max_size=20))
def test_any_tool_schema_gives_a_verdict_not_a_crash(schema: object, arguments: object) -> None:
    box = ToolBox([{"name": "Tool", "input_schema": schema}])
    with contextlib.suppress(ToolCallError):
        box.check("Tool", arguments if isinstance(arguments, str | dict) else msgspec.json.encode(arguments).decode())


def test_hostile_schemas_reach_nothing_and_cost_nothing() -> None:
    """No $ref is fetched (a closed port would hang or refuse; either way nothing may be tried),
    and a catastrophic pattern is matched in linear time."""
    import time

    refs = ToolBox([{"name": "R", "input_schema": {"properties": {"a": {"$ref": "http://127.0.0.1:9/s.json"}}}}])
    assert refs.check("R", {"a": 1}).checked is False
    files = ToolBox([{"name": "F", "input_schema": {"properties": {"a": {"$ref": "file:///etc/passwd"}}}}])
    assert files.check("F", {"a": 1}).checked is False
    redos = ToolBox([{"name": "P", "input_schema": {"properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}}])
    started = time.process_time()
    for _ in range(100):
        try:
            redos.check("P", {"a": "a" * 5000 + "!"})
        except ToolCallError as exc:
            assert exc.kind == "schema"
    assert time.process_time() - started < 5  # Python's re: over 19 s for one 29-character match
