"""Nothing a client sends makes the request path raise anything but a 400-class InvalidRequest."""

from __future__ import annotations

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.protocol.anthropic import InvalidRequest, MessagesRequest, decode_body, validate
from router.protocol.estimate import estimate_input_tokens
from router.protocol.to_openai import to_openai_request

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
block_types = st.sampled_from(
    ["text", "image", "tool_use", "tool_result", "thinking", "document", "redacted_thinking", "x"]
)
blocks = st.fixed_dictionaries(
    {"type": block_types},
    optional={
        "text": json_values,
        "id": json_values,
        "name": json_values,
        "input": json_values,
        "tool_use_id": json_values,
        "content": json_values,
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
        ),
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
